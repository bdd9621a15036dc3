use flext::DomainEvent;

#[derive(DomainEvent)]
enum CourseEvent {
    #[event(name = "course.closed", tag = "course:{course}")]
    Closed(String),
}

fn main() {}
