//! API keys: creation (one MULTI writes the key's record and its index entry), listing and
//! revocation. The secret is returned once and stored only as its SHA-256.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{AuthCache, AuthError, Role, digest, new_secret, redis_failed};
use crate::domain::{DriverId, FieldError};
use crate::store::Store;

/// Metadata of an API key (never the key itself).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[schema(example = json!({"key_id": "key_3f2a9c1d7e5b4a60", "role": "driver", "driver_id": "drv-1", "name": "phone of drv-1", "created_at": "2026-11-24T10:00:00Z"}))]
pub(crate) struct KeyInfo {
    /// Key id (for listing and revocation).
    pub(crate) key_id: String,
    /// Role.
    pub(crate) role: Role,
    /// The driver a driver key is bound to.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub(crate) driver_id: Option<String>,
    /// Free-form label.
    #[serde(default)]
    pub(crate) name: String,
    /// Creation time.
    pub(crate) created_at: String,
}

/// `POST /v1/admin/keys` body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"role": "driver", "driver_id": "drv-1", "name": "phone of drv-1"}))]
pub(crate) struct NewKey {
    /// `admin`, `dispatcher` or `driver`.
    pub(crate) role: Role,
    /// The driver a `driver` key is bound to (required for, and only for, driver keys).
    #[serde(default)]
    pub(crate) driver_id: Option<String>,
    /// Free-form label (at most 100 characters).
    #[serde(default)]
    pub(crate) name: Option<String>,
}

/// A created key: the secret is shown this once and stored only as its SHA-256.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[schema(example = json!({"key": "gdk_0f6c1d8a9b2e4f7a8c3d5e6f7a8b9c0d", "key_id": "key_3f2a9c1d7e5b4a60", "role": "driver", "driver_id": "drv-1", "name": "phone of drv-1", "created_at": "2026-11-24T10:00:00Z"}))]
pub(crate) struct CreatedKey {
    /// The API key: send it as `Authorization: Bearer <key>`.
    pub(crate) key: String,
    /// Its metadata.
    #[serde(flatten)]
    pub(crate) info: KeyInfo,
}

/// `GET /v1/admin/keys` answer.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct KeyList {
    /// Every key, oldest first (metadata only).
    pub(crate) keys: Vec<KeyInfo>,
}

/// A key's entry in the index (`{prefix}:apikeys`).
#[derive(Debug, Serialize, Deserialize)]
struct StoredMeta {
    role: Role,
    driver_id: Option<String>,
    name: String,
    created_at: String,
    digest: String,
}

impl NewKey {
    /// The role, the normalized driver binding and the label, or why the request is refused.
    fn validate(self) -> Result<(Role, Option<String>, String), AuthError> {
        let invalid = |field: &str, message: String| {
            AuthError::Validation(vec![FieldError::new(field, message)])
        };
        let driver = match (self.role, self.driver_id) {
            (Role::Driver, Some(d)) => Some(
                DriverId::parse(&d)
                    .map_err(|e| invalid("driver_id", e))?
                    .to_string(),
            ),
            (Role::Driver, None) => {
                return Err(invalid(
                    "driver_id",
                    "a driver key must name its driver".to_owned(),
                ));
            }
            (_, Some(_)) => {
                return Err(invalid(
                    "driver_id",
                    "only driver keys are bound to a driver".to_owned(),
                ));
            }
            (_, None) => None,
        };
        let name = self.name.unwrap_or_default();
        if name.chars().count() > 100 {
            return Err(invalid("name", "at most 100 characters".to_owned()));
        }
        Ok((self.role, driver, name))
    }
}

/// Validate an administrator's key request, then create the key.
pub(crate) async fn issue_key(store: &Store, request: NewKey) -> Result<CreatedKey, AuthError> {
    let (role, driver, name) = request.validate()?;
    let (key, info) = create_key(store, role, driver, &name).await?;
    Ok(CreatedKey { key, info })
}

/// Create and store a key; returns the secret (shown once) and its metadata.
pub(crate) async fn create_key(
    store: &Store,
    role: Role,
    driver_id: Option<String>,
    name: &str,
) -> Result<(String, KeyInfo), AuthError> {
    let secret = new_secret("gdk_");
    let d = digest(&secret);
    let key_id = format!("key_{}", &uuid::Uuid::new_v4().simple().to_string()[..16]);
    let created_at = crate::domain::rfc3339_ms(store.local_now_ms());
    let meta = StoredMeta {
        role,
        driver_id: driver_id.clone(),
        name: name.to_owned(),
        created_at: created_at.clone(),
        digest: d.clone(),
    };
    let keys = store.keys();
    let mut conn = store.conn();
    let _: () = redis::pipe()
        .atomic()
        .cmd("HSET")
        .arg(keys.api_key(&d))
        .arg("key_id")
        .arg(&key_id)
        .arg("role")
        .arg(role.as_str())
        .arg("driver")
        .arg(driver_id.as_deref().unwrap_or(""))
        .ignore()
        .cmd("HSET")
        .arg(keys.api_key_index())
        .arg(&key_id)
        .arg(serde_json::to_string(&meta).map_err(anyhow::Error::from)?)
        .ignore()
        .query_async(&mut conn)
        .await
        .map_err(redis_failed("create key"))?;
    Ok((
        secret,
        KeyInfo {
            key_id,
            role,
            driver_id,
            name: name.to_owned(),
            created_at,
        },
    ))
}

/// Every key's metadata, oldest first.
pub(crate) async fn list_keys(store: &Store) -> Result<KeyList, AuthError> {
    let mut conn = store.conn();
    let all: HashMap<String, String> = redis::cmd("HGETALL")
        .arg(store.keys().api_key_index())
        .query_async(&mut conn)
        .await
        .map_err(redis_failed("list keys"))?;
    let mut keys: Vec<KeyInfo> = all
        .into_iter()
        .filter_map(|(key_id, json)| {
            let m: StoredMeta = serde_json::from_str(&json).ok()?;
            Some(KeyInfo {
                key_id,
                role: m.role,
                driver_id: m.driver_id,
                name: m.name,
                created_at: m.created_at,
            })
        })
        .collect();
    keys.sort_by(|a, b| {
        a.created_at
            .cmp(&b.created_at)
            .then(a.key_id.cmp(&b.key_id))
    });
    Ok(KeyList { keys })
}

/// Revoke a key; its sessions die on their next use. Other instances may still accept it
/// for up to `auth_cache_ms` (their [`AuthCache`]).
pub(crate) async fn revoke_key(
    store: &Store,
    cache: &AuthCache,
    key_id: &str,
) -> Result<(), AuthError> {
    let keys = store.keys();
    let mut conn = store.conn();
    let meta: Option<String> = redis::cmd("HGET")
        .arg(keys.api_key_index())
        .arg(key_id)
        .query_async(&mut conn)
        .await
        .map_err(redis_failed("revoke key"))?;
    let Some(meta) = meta else {
        return Err(AuthError::KeyNotFound(key_id.to_owned()));
    };
    let meta: StoredMeta = serde_json::from_str(&meta).map_err(anyhow::Error::from)?;
    let _: () = redis::pipe()
        .atomic()
        .cmd("DEL")
        .arg(keys.api_key(&meta.digest))
        .ignore()
        .cmd("HDEL")
        .arg(keys.api_key_index())
        .arg(key_id)
        .ignore()
        .query_async(&mut conn)
        .await
        .map_err(redis_failed("revoke key"))?;
    cache.forget(&meta.digest);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(role: Role, driver_id: Option<&str>, name: Option<&str>) -> NewKey {
        NewKey {
            role,
            driver_id: driver_id.map(str::to_owned),
            name: name.map(str::to_owned),
        }
    }

    #[test]
    fn key_requests_bind_driver_keys_and_only_them_to_a_driver() {
        let long = "x".repeat(101);
        let refused = [
            (
                request(Role::Driver, None, None),
                "driver_id",
                "a driver key must name its driver",
            ),
            (
                request(Role::Dispatcher, Some("drv-1"), None),
                "driver_id",
                "only driver keys are bound to a driver",
            ),
            (
                request(Role::Admin, None, Some(&long)),
                "name",
                "at most 100 characters",
            ),
        ];
        for (req, field, message) in refused {
            match req.validate() {
                Err(AuthError::Validation(errors)) => {
                    assert_eq!(errors, vec![FieldError::new(field, message)]);
                }
                other => panic!("{field}: {message}: got {other:?}"),
            }
        }
        assert!(matches!(
            request(Role::Driver, Some("not a driver id!"), None).validate(),
            Err(AuthError::Validation(ref e)) if e[0].field == "driver_id"
        ));
        let (role, driver, name) = request(Role::Driver, Some("drv-1"), Some("phone"))
            .validate()
            .unwrap();
        assert_eq!(
            (role, driver.as_deref(), name.as_str()),
            (Role::Driver, Some("drv-1"), "phone")
        );
    }
}
