//! Where an order is in its life, as the order scripts store it and the API shows it.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Where an order is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub(crate) enum OrderState {
    /// Waiting for a driver.
    Pending,
    /// Offered to one driver, who has `offer_ttl_ms` to answer.
    Offered,
    /// The driver accepted.
    Accepted,
    /// The driver picked it up.
    PickedUp,
    /// Delivered (terminal).
    Delivered,
    /// Cancelled (terminal).
    Cancelled,
    /// No driver found after the configured attempts (terminal).
    Failed,
}

impl OrderState {
    /// Parse the stored name.
    pub(crate) fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "pending" => OrderState::Pending,
            "offered" => OrderState::Offered,
            "accepted" => OrderState::Accepted,
            "picked_up" => OrderState::PickedUp,
            "delivered" => OrderState::Delivered,
            "cancelled" => OrderState::Cancelled,
            "failed" => OrderState::Failed,
            _ => return None,
        })
    }

    /// Whether no transition leaves this state.
    #[cfg(test)]
    pub(crate) fn is_terminal(self) -> bool {
        matches!(
            self,
            OrderState::Delivered | OrderState::Cancelled | OrderState::Failed
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_state_parses_back_from_its_stored_name_and_only_the_last_three_are_terminal() {
        let all = [
            (OrderState::Pending, "pending", false),
            (OrderState::Offered, "offered", false),
            (OrderState::Accepted, "accepted", false),
            (OrderState::PickedUp, "picked_up", false),
            (OrderState::Delivered, "delivered", true),
            (OrderState::Cancelled, "cancelled", true),
            (OrderState::Failed, "failed", true),
        ];
        for (state, name, terminal) in all {
            assert_eq!(OrderState::parse(name), Some(state));
            assert_eq!(
                serde_json::to_value(state).unwrap(),
                serde_json::json!(name),
                "the stored name is the JSON name"
            );
            assert_eq!(state.is_terminal(), terminal, "{name}");
        }
        for unknown in ["", "Pending", "picked-up", "done"] {
            assert_eq!(OrderState::parse(unknown), None, "{unknown:?} is no state");
        }
    }
}

/// How pending orders find their drivers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum DispatchPolicy {
    /// Each order goes, when it is dispatched, to the best single candidate for it.
    #[default]
    Greedy,
    /// Pending orders wait in their city's pool, and a round every `match_interval_ms` assigns
    /// all due orders to free drivers at once, at least total cost.
    Batched,
}

impl DispatchPolicy {
    /// Lower-case name, as stored with each order.
    pub fn as_str(self) -> &'static str {
        match self {
            DispatchPolicy::Greedy => "greedy",
            DispatchPolicy::Batched => "batched",
        }
    }
}
