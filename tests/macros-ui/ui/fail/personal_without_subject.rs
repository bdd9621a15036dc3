use flext::DomainEvent;

#[derive(DomainEvent)]
enum CustomerEvent {
    #[event(name = "customer.registered")]
    Registered {
        #[personal]
        email: String,
    },
}

fn main() {}
