use eventdriven::Events;

#[derive(Events, Clone)]
enum AccountEvent {}

fn main() {}
