use std::rc::Rc;

use eventdriven::prelude::*;

#[derive(Event, Clone)]
struct Placed {
    items: Rc<Vec<u64>>,
}

fn main() {
    let _ = Placed { items: Rc::new(Vec::new()) }.items;
}
