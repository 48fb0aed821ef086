use eventdriven::Events;

#[derive(Events, Clone)]
enum AccountEvent<T> {
    Opened(T),
}

fn main() {}
