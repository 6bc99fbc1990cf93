//! Two tasks with one name and version are refused when an engine is built.

#[routine::task(name = "twice", version = "1.0.0")]
async fn first(x: u32) -> u32 {
    x
}

mod elsewhere {
    #[routine::task(name = "twice", version = "1.0.0")]
    pub async fn second(x: u32) -> u32 {
        x + 1
    }
}

#[routine::task(name = "twice", version = "1.0.1")]
async fn third(x: u32) -> u32 {
    x + 2
}

#[test]
fn duplicate_name_and_version_is_a_start_up_error() {
    let dir = tempfile::tempdir().unwrap();
    let error = routine::Engine::local(dir.path()).unwrap_err().to_string();
    assert!(error.contains("tname:twice:1.0.0"), "{error}");
    assert!(!error.contains("1.0.1"), "{error}");
    assert!(error.contains("duplicate_registration.rs"), "{error}");
    assert!(
        error.contains("rename one or give it another version"),
        "{error}"
    );
    let _ = (first, elsewhere::second, third);
}

#[test]
#[should_panic(expected = "tname:twice:1.0.0")]
fn in_memory_engine_panics_on_duplicates() {
    let _ = routine::Engine::in_memory();
}
