//! A panic ends the daemon after the clean-up SIGTERM does (see the main loop): the hook
//! notes it and wakes the loop, wherever the panic happened (tokio catches a task's).

use std::sync::LazyLock;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::Notify;

static HAPPENED: AtomicBool = AtomicBool::new(false);
static WAKE: LazyLock<Notify> = LazyLock::new(Notify::new);

/// Installs the hook, keeping the default one's report on stderr.
pub(super) fn install_hook() {
    let report = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        tracing::error!(%info, "panic");
        report(info);
        HAPPENED.store(true, Ordering::SeqCst);
        // A permit is kept if the loop is not waiting yet.
        WAKE.notify_one();
    }));
}

/// Whether a panic happened.
pub(super) fn happened() -> bool {
    HAPPENED.load(Ordering::SeqCst)
}

/// Resolves once a panic happened.
pub(super) async fn notified() {
    WAKE.notified().await;
}
