//! Upcasting: stored events of an older schema turned into the current one as they are read.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use crate::store::{StoreError, StoreResult, StoredEvent};

type Step = Arc<dyn Fn(serde_json::Value) -> Result<serde_json::Value, String> + Send + Sync>;

/// Chains of upcasters, one step per event name and schema version.
///
/// A step registered for (`name`, `from`) turns a payload of schema version `from` into one of
/// `from + 1`; reading runs the steps one after the other until none is registered for the
/// version reached. Events are never rewritten in the store: upcasting happens on every read.
///
/// ```
/// use eventdriven::aggregate::Upcasters;
/// use serde_json::{json, Value};
///
/// // v1 had one `address`; v2 splits it into `shipping` and `billing`.
/// let upcasters = Upcasters::new().add("order.created", 1, |mut v1: Value| -> Result<Value, &str> {
///     let address = v1.as_object_mut().ok_or("not an object")?.remove("address");
///     let address = address.ok_or("v1 without an address")?;
///     v1["shipping"] = address.clone();
///     v1["billing"] = address;
///     Ok(v1)
/// });
/// assert_eq!(upcasters.len(), 1);
/// ```
#[derive(Clone, Default)]
pub struct Upcasters {
    steps: HashMap<(String, u32), Step>,
}

impl Upcasters {
    /// No upcasters.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers the step that turns `name` at schema version `from` into version `from + 1`.
    /// A later step for the same name and version replaces the earlier one.
    pub fn add<F, E>(mut self, name: &str, from: u32, step: F) -> Self
    where
        F: Fn(serde_json::Value) -> Result<serde_json::Value, E> + Send + Sync + 'static,
        E: fmt::Display,
    {
        let step: Step = Arc::new(move |value| step(value).map_err(|e| e.to_string()));
        self.steps.insert((name.to_owned(), from), step);
        self
    }

    /// How many steps are registered.
    pub fn len(&self) -> usize {
        self.steps.len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }

    /// Runs every step that applies to `event`, raising its `schema_version` as it goes.
    pub fn upcast(&self, event: &mut StoredEvent) -> StoreResult<()> {
        if self.steps.is_empty() {
            return Ok(());
        }
        // One lookup key reused across steps; the name does not change.
        let mut key = (event.name.clone(), event.schema_version);
        while let Some(step) = self.steps.get(&key) {
            let payload = std::mem::take(&mut event.payload);
            event.payload = step(payload).map_err(|message| StoreError::Upcast {
                name: event.name.clone(),
                from: key.1,
                message,
            })?;
            key.1 += 1;
            event.schema_version = key.1;
        }
        Ok(())
    }
}

impl fmt::Debug for Upcasters {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut steps: Vec<_> = self.steps.keys().collect();
        steps.sort();
        f.debug_struct("Upcasters").field("steps", &steps).finish()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::message::Metadata;

    fn stored(name: &str, version: u32, payload: serde_json::Value) -> StoredEvent {
        StoredEvent {
            position: 1,
            stream: "s".into(),
            version: 1,
            name: name.into(),
            schema_version: version,
            payload,
            metadata: Metadata::new(),
        }
    }

    #[test]
    fn steps_chain_until_none_applies() {
        let upcasters = Upcasters::new()
            .add("e", 1, |v| Ok::<_, String>(json!({ "v2": v })))
            .add("e", 2, |v| Ok::<_, String>(json!({ "v3": v })));
        let mut event = stored("e", 1, json!(0));
        upcasters.upcast(&mut event).unwrap();
        assert_eq!(event.schema_version, 3);
        assert_eq!(event.payload, json!({ "v3": { "v2": 0 } }));

        let mut current = stored("e", 3, json!(0));
        upcasters.upcast(&mut current).unwrap();
        assert_eq!((current.schema_version, current.payload), (3, json!(0)));

        let mut other = stored("f", 1, json!(0));
        upcasters.upcast(&mut other).unwrap();
        assert_eq!(other.schema_version, 1);
    }

    #[test]
    fn a_failing_step_names_the_event_and_version() {
        let upcasters = Upcasters::new().add("e", 1, |_| Err("no address"));
        let err = upcasters
            .upcast(&mut stored("e", 1, json!({})))
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "upcasting `e` from schema version 1 failed: no address"
        );
    }
}
