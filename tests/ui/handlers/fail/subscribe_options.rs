// Wrong options of `#[subscribe]`, all reported at once, each at its option.
use eventdriven::prelude::*;

#[derive(Event, Clone)]
struct A {
    id: u64,
}
#[derive(Event, Clone)]
struct B;
#[derive(Event, Clone)]
struct C;
#[derive(Event, Clone)]
struct D;
#[derive(Event, Clone)]
struct E;

struct Worker;

#[handlers]
impl Worker {
    #[subscribe(key = |ev: &A| ev.id)]
    fn a(&mut self, _: &A) {}

    #[subscribe(backoff = "1s")]
    fn b(&mut self, _: &B) {}

    #[subscribe(retry = 3, backoff = "10s..1s")]
    fn c(&mut self, _: &C) {}

    #[subscribe(ordered = true)]
    fn d(&mut self, _: &D) {}

    #[subscribe(retry = 1, retry = 2)]
    fn e(&mut self, _: &E) {}
}

fn main() {}
