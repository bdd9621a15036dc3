use flext::DomainEvent;

#[derive(DomainEvent)]
enum CourseEvent {
    #[event(name = "course.opened", tag = "course:{course id}")]
    Opened { course: String },
    #[event(name = "course.closed", tag = "course:{0}")]
    Closed(String),
}

fn main() {}
