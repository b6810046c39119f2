//! Crash points for the crash tests (cargo feature `failpoints`, off in
//! release builds): a process started with `KAFSCALE_FAILPOINT=<name>` aborts
//! at that point, without flushing or handing anything over, as a kill -9 at
//! that instant would leave it. Without the feature [`hit`] does nothing.

/// Aborts the process here if `KAFSCALE_FAILPOINT` names this point.
#[inline]
pub fn hit(name: &str) {
    #[cfg(feature = "failpoints")]
    if let Ok(v) = std::env::var("KAFSCALE_FAILPOINT") {
        if v == name {
            tracing::error!(failpoint = name, "failpoint hit: aborting");
            std::process::abort();
        }
        static STOPPED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
        if v.strip_suffix(":stop") == Some(name)
            && !STOPPED.swap(true, std::sync::atomic::Ordering::SeqCst)
        {
            // A zombie in the making: the process stops itself here (once)
            // and goes on from here when the test sends SIGCONT.
            tracing::error!(failpoint = name, "failpoint hit: stopping");
            let _ = std::process::Command::new("kill")
                .args(["-STOP", &std::process::id().to_string()])
                .status();
            tracing::error!(failpoint = name, "failpoint: continued");
        }
    }
    #[cfg(not(feature = "failpoints"))]
    let _ = name;
}

/// Whether `KAFSCALE_FAILPOINT` names `name`: for behaviour a test switches
/// on (such as writing an old record format); always false without the
/// `failpoints` feature.
#[inline]
pub fn active(name: &str) -> bool {
    #[cfg(feature = "failpoints")]
    {
        std::env::var("KAFSCALE_FAILPOINT").is_ok_and(|v| v == name)
    }
    #[cfg(not(feature = "failpoints"))]
    {
        let _ = name;
        false
    }
}
