//! Route policies: who may call each `/v1` route, and which rate-limit class and subject it
//! counts against. Only a few routes are public.

use actix_web::http::Method;

use crate::auth::Role;

/// The rate-limit class of a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Class {
    /// Location and status updates (per driver).
    Location,
    /// Order creation and dispatch (per key).
    Dispatch,
    /// Everything else (per key).
    Default,
}

impl Class {
    /// Name used in keys and headers.
    pub(super) fn as_str(self) -> &'static str {
        match self {
            Class::Location => "location",
            Class::Dispatch => "dispatch",
            Class::Default => "default",
        }
    }
}

/// Who may call a route and what it counts against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct RoutePolicy {
    /// Roles allowed.
    pub(super) roles: &'static [Role],
    /// A driver may call it only for the driver id in this path segment (index).
    pub(super) own_driver_segment: Option<usize>,
    /// Rate-limit class.
    pub(super) class: Class,
}

const ALL: &[Role] = &[Role::Admin, Role::Dispatcher, Role::Driver];
const STAFF: &[Role] = &[Role::Admin, Role::Dispatcher];
const ADMIN: &[Role] = &[Role::Admin];
const DRIVER: &[Role] = &[Role::Driver];

/// The policy of `method path` (a `/v1/…` path).
pub(super) fn route_policy(method: &Method, path: &str) -> RoutePolicy {
    let seg: Vec<&str> = path.trim_end_matches('/').split('/').skip(1).collect();
    let p = |roles, own, class| RoutePolicy {
        roles,
        own_driver_segment: own,
        class,
    };
    match (method.as_str(), seg.as_slice()) {
        (_, ["v1", "admin", ..]) => p(ADMIN, None, Class::Default),
        ("PUT", ["v1", "drivers", _, "location" | "status"]) => p(ALL, Some(2), Class::Location),
        ("GET", ["v1", "drivers", id, ..]) if *id != "nearby" => p(ALL, Some(2), Class::Default),
        (
            "POST",
            [
                "v1",
                "orders",
                _,
                "accept" | "reject" | "pickup" | "deliver",
            ],
        ) => {
            // The body's driver_id is checked against the key by the handler.
            p(ALL, None, Class::Default)
        }
        ("POST", ["v1", "orders"]) | ("POST", ["v1", "orders", _, "dispatch"]) => {
            p(STAFF, None, Class::Dispatch)
        }
        ("POST", ["v1", "sessions"]) => p(DRIVER, None, Class::Default),
        ("DELETE", ["v1", "sessions", "current"]) => p(ALL, None, Class::Default),
        _ => p(STAFF, None, Class::Default),
    }
}

/// Routes anyone may call: health, metrics, the API document and its UI, the map page.
pub(super) fn is_public(path: &str) -> bool {
    matches!(
        path,
        "/healthz"
            | "/readyz"
            | "/metrics"
            | "/openapi.json"
            | "/docs"
            | "/map"
            | "/map/cities.geojson"
    ) || path.starts_with("/docs/")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_policies_give_drivers_only_their_own_data() {
        let put = Method::PUT;
        let p = route_policy(&put, "/v1/drivers/drv-1/location");
        assert_eq!(
            (p.roles, p.own_driver_segment, p.class),
            (ALL, Some(2), Class::Location)
        );
        assert_eq!(
            route_policy(&Method::GET, "/v1/drivers/nearby").roles,
            STAFF
        );
        assert_eq!(
            route_policy(&Method::POST, "/v1/locations/batch").roles,
            STAFF
        );
        assert_eq!(
            route_policy(&Method::POST, "/v1/orders").class,
            Class::Dispatch
        );
        assert_eq!(
            route_policy(&Method::POST, "/v1/orders/o1/dispatch").roles,
            STAFF
        );
        assert_eq!(
            route_policy(&Method::POST, "/v1/orders/o1/accept").roles,
            ALL
        );
        assert_eq!(route_policy(&Method::GET, "/v1/admin/keys").roles, ADMIN);
        assert_eq!(route_policy(&Method::GET, "/v1/events").roles, STAFF);
    }

    #[test]
    fn only_health_docs_metrics_and_the_map_are_public() {
        for open in [
            "/healthz",
            "/readyz",
            "/metrics",
            "/openapi.json",
            "/docs",
            "/docs/index.html",
            "/map",
            "/map/cities.geojson",
        ] {
            assert!(is_public(open), "{open}");
        }
        for closed in [
            "/v1/cities",
            "/",
            "/v2/x",
            "/mapx",
            "/healthz/x",
            "/map/other",
        ] {
            assert!(!is_public(closed), "{closed}");
        }
    }
}
