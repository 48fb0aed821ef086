use eventdriven::prelude::*;

#[derive(Command)]
struct Place;

struct Orders<T>(T);

#[handlers]
impl<T: Send + 'static> Orders<T> {
    #[handle]
    fn place(&mut self, _: Place) {}
}

fn main() {}
