use eventdriven::prelude::*;

// Type parameters get the bounds the message kind needs, so generic messages just work.
#[derive(Event, Clone, Debug)]
struct Changed<T> {
    value: T,
}

#[derive(Command, Debug)]
#[command(reply = Option<T>)]
struct Put<T> {
    value: T,
}

fn is_event<E: Event>() {}
fn is_command<C: Command>() {}

fn main() {
    is_event::<Changed<String>>();
    is_command::<Put<u32>>();
    let _ = (Changed { value: 1 }.value, Put { value: 1 }.value);
}
