use eventdriven::prelude::*;

struct Orders;

fn main() {
    let _ = App::builder().actor(Orders);
}
