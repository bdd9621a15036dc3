use flext::plugin;

#[plugin]
fn not_a_type() {}

fn main() {}
