//! What a transfer shows: one progress bar per blob while it runs, one line when done.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use harbor_client::image;
use harbor_client::{Event, Events};

/// `DIR` or `DIR:TAG`.
pub(crate) fn transfer_line(what: &str, t: &image::Transfer) {
    println!(
        "{what} {}: {} blobs sent, {} mounted, {} already there ({} KiB)",
        t.digest,
        t.transferred,
        t.mounted,
        t.skipped,
        t.bytes.div_ceil(1024)
    );
}

/// One progress bar per blob on standard error.
pub(crate) fn progress_bars() -> Events {
    let bars = indicatif::MultiProgress::new();
    let style = indicatif::ProgressStyle::with_template(
        "{prefix:.bold} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}",
    )
    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
    .progress_chars("=> ");
    let active: Mutex<HashMap<String, indicatif::ProgressBar>> = Mutex::new(HashMap::new());
    Arc::new(move |event| {
        let mut active = active
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match event {
            Event::Start { digest, size } => {
                let bar = bars.add(indicatif::ProgressBar::new(size));
                bar.set_style(style.clone());
                bar.set_prefix(digest.hex().chars().take(12).collect::<String>());
                active.insert(digest.to_string(), bar);
            }
            Event::Bytes { digest, n } => {
                if let Some(bar) = active.get(digest.as_str()) {
                    bar.inc(n);
                }
            }
            Event::Done { digest } => {
                if let Some(bar) = active.remove(digest.as_str()) {
                    bar.finish();
                }
            }
            _ => {}
        }
    })
}
