use flext::projection;

#[projection]
async fn balances() {}

fn main() {}
