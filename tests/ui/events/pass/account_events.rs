use eventdriven::aggregate::Events;
use eventdriven::prelude::*;
use eventdriven::store::StoredEvent;

#[derive(Event, Clone, Debug, PartialEq, Serialize, Deserialize)]
#[event(name = "account.opened")]
struct Opened {
    owner: String,
}

#[derive(Event, Clone, Debug, PartialEq, Serialize, Deserialize)]
#[event(name = "account.deposited", version = 2)]
struct Deposited {
    amount: u64,
}

#[derive(Events, Clone, Debug, PartialEq)]
enum AccountEvent {
    Opened(Opened),
    Deposited(Deposited),
}

fn main() {
    let event: AccountEvent = Deposited { amount: 5 }.into();
    assert_eq!(event.name(), "account.deposited");
    assert_eq!(event.schema_version(), 2);
    let data = event.encode(Metadata::new()).unwrap();
    let stored = StoredEvent {
        position: 1,
        stream: "account-1".into(),
        version: 1,
        name: data.name,
        schema_version: data.schema_version,
        payload: data.payload,
        metadata: data.metadata,
    };
    assert_eq!(AccountEvent::decode(&stored).unwrap(), event);
    let _ = AccountEvent::from(Opened { owner: "ada".into() });
}
