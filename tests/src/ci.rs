//! The one rule for tests that need something the machine may lack (root,
//! a tool, a device): skip with a message, except under `CI=true`, where a
//! missing prerequisite is a failure, since CI must never pass by skipping.
//!
//! `vswitch-tests` exports this module; the `vswitch` crate's own tests
//! include this same file (`#[path]`), so there is one copy of the rule.

/// Whether missing prerequisites fail the test instead of skipping it.
#[must_use]
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// Whether `test` can run: `missing` names what it lacks, if anything.
/// Prints why it is skipped and returns `false`; panics under `CI=true`.
#[must_use]
pub fn can_run(test: &str, missing: Option<&str>) -> bool {
    let Some(what) = missing else {
        return true;
    };
    assert!(
        !in_ci(),
        "{test} needs {what}; CI=true, so this fails instead of skipping"
    );
    eprintln!("skipped: {test} needs {what}");
    false
}
