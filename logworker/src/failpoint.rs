//! Crash points for the crash tests (cargo feature `failpoints`, off in
//! release builds): a process started with `KAFSCALE_FAILPOINT=<name>` aborts
//! at that point, without flushing or handing anything over, as a kill -9 at
//! that instant would leave it. Without the feature [`hit`] does nothing.

/// Aborts the process here if `KAFSCALE_FAILPOINT` names this point.
#[inline]
pub fn hit(name: &str) {
    #[cfg(feature = "failpoints")]
    if std::env::var("KAFSCALE_FAILPOINT").is_ok_and(|v| v == name) {
        tracing::error!(failpoint = name, "failpoint hit: aborting");
        std::process::abort();
    }
    #[cfg(not(feature = "failpoints"))]
    let _ = name;
}
