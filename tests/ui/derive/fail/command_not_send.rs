use std::cell::RefCell;
use std::rc::Rc;

use eventdriven::prelude::*;

#[derive(Command)]
struct Place {
    basket: Rc<RefCell<Vec<u64>>>,
}

fn main() {
    let _ = Place { basket: Rc::default() }.basket;
}
