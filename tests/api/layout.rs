//! The layout version of the data: a new deployment is stamped with the build's layout, data
//! of layout 1 is refused until `geodispatch migrate` brings it to the current layout.

use geodispatch::store::keys::LAYOUT_VERSION;

use crate::helpers::spawn_app;

#[tokio::test]
async fn a_new_redis_is_stamped_with_the_current_layout_when_first_ready() {
    let app = spawn_app().await;
    assert_eq!(app.context.store.layout().await.unwrap(), None);
    assert_eq!(app.get("/readyz").await.status, 200);
    assert_eq!(
        app.context.store.layout().await.unwrap(),
        Some(LAYOUT_VERSION)
    );
}

#[tokio::test]
async fn layout_one_data_is_not_ready_until_migrate_brings_it_to_the_current_layout() {
    let app = spawn_app().await;
    let keys = app.context.store.keys();
    let mut conn = app.redis_conn().await;
    let () = redis::cmd("HSET")
        .arg(keys.legacy_driver_directory())
        .arg("old1")
        .arg("paris|1700000000000")
        .query_async(&mut conn)
        .await
        .unwrap();

    app.get("/readyz").await.assert_problem(503, "unavailable");
    assert_eq!(app.context.store.layout().await.unwrap(), None);

    let mut settings = (*app.context.settings).clone();
    settings.redis_url = Some(app.redis_url.clone());
    let migration = geodispatch::app::migrate(settings.clone()).await.unwrap();
    assert_eq!(
        (migration.from_layout, migration.to_layout),
        (1, LAYOUT_VERSION)
    );
    assert_eq!(migration.changes.directory_moved, 1);
    assert_eq!(
        app.context.store.layout().await.unwrap(),
        Some(LAYOUT_VERSION)
    );
    assert_eq!(app.get("/readyz").await.status, 200);

    let again = geodispatch::app::migrate(settings).await.unwrap();
    assert_eq!(
        (again.from_layout, again.to_layout),
        (LAYOUT_VERSION, LAYOUT_VERSION)
    );
    assert_eq!(
        again.changes,
        geodispatch::drivers::MigrateReport::default()
    );
}
