//! `GET /metrics`: the counters and histograms of [`crate::metrics`], with this instance's
//! Redis pool gauges and the webhook backlogs read at scrape time.

use actix_web::{HttpResponse, get, web};

use crate::store::Store;

/// Prometheus metrics of this instance.
#[utoipa::path(
    tag = "health",
    responses((status = 200, description = "Prometheus text format 0.0.4", content_type = "text/plain; version=0.0.4", body = String)),
)]
#[get("/metrics")]
pub(crate) async fn metrics(
    store: web::Data<Store>,
    hooks: web::Data<crate::webhooks::Webhooks>,
) -> HttpResponse {
    let status = store.pool().status();
    let mut gauges = vec![
        (
            "geodispatch_redis_pool_connections",
            vec![("state", "open".to_owned())],
            status.size as f64,
        ),
        (
            "geodispatch_redis_pool_connections",
            vec![("state", "idle".to_owned())],
            status.available as f64,
        ),
        (
            "geodispatch_redis_pool_connections",
            vec![("state", "max".to_owned())],
            status.max_size as f64,
        ),
    ];
    // A scrape without Redis still shows the instance's own metrics.
    if let Ok(backlogs) = hooks.backlogs().await {
        gauges.extend(backlogs.into_iter().map(|(endpoint, backlog)| {
            (
                "geodispatch_webhook_backlog",
                vec![("endpoint", endpoint)],
                backlog as f64,
            )
        }));
    }
    HttpResponse::Ok()
        .content_type(crate::metrics::CONTENT_TYPE)
        .body(crate::metrics::render(&gauges))
}
