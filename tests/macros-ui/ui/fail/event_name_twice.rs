use flext::DomainEvent;

#[derive(DomainEvent)]
enum Event {
    #[event(name = "a")]
    A,
    #[event(name = "a", version = 2)]
    B,
}

fn main() {}
