use flext::DomainEvent;

#[derive(DomainEvent)]
enum Event {
    #[event(name = "a")]
    A,
    B,
}

fn main() {}
