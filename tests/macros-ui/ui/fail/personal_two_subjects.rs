use flext::DomainEvent;

#[derive(DomainEvent)]
#[event(name = "customer.merged")]
struct Merged {
    #[personal(subject)]
    customer: String,
    #[personal(subject)]
    other: String,
    #[personal(replacement = "[erased]")]
    email: String,
}

fn main() {}
