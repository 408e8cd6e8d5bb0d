//! The kernel's read-ahead for the mount. A FUSE file system gets its own
//! backing device (bdi) whose read-ahead starts at the kernel default
//! (128 KiB), and the `max_readahead` a daemon answers at init can only lower
//! it. With 128 KiB the kernel splits a 1 MiB read into small synchronous
//! requests, and a cold sequential read spends its time in request round
//! trips (measured: 200–250 MB/s at 128 KiB, 400–580 MB/s at 4 MiB on the same
//! cluster). The only knob is `/sys/class/bdi/MAJOR:MINOR/read_ahead_kb`,
//! which root may write after the mount exists; other users keep the default.

use std::path::Path;

/// The "MAJOR:MINOR" of the file system mounted at `mountpoint` (the last
/// mount there), from /proc/self/mountinfo.
fn device_of(mountpoint: &Path) -> Option<String> {
    let mountpoint = mountpoint.canonicalize().ok()?;
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    info.lines()
        .rev()
        .filter_map(|line| {
            let mut fields = line.split(' ');
            let device = fields.nth(2)?;
            let path = fields.nth(1)?;
            (Path::new(path) == mountpoint).then(|| device.to_string())
        })
        .next()
}

/// Sets the kernel's read-ahead for the mount at `mountpoint` to `bytes`
/// (rounded down to KiB). Best effort: logged, never fatal.
pub fn set_read_ahead(mountpoint: &Path, bytes: u64) {
    let Some(device) = device_of(mountpoint) else {
        tracing::warn!(mountpoint = %mountpoint.display(), "the mount is not in /proc/self/mountinfo; kernel read-ahead left as it is");
        return;
    };
    let knob = format!("/sys/class/bdi/{device}/read_ahead_kb");
    match std::fs::write(&knob, format!("{}\n", bytes / 1024)) {
        Ok(()) => tracing::info!(%knob, read_ahead_kb = bytes / 1024, "kernel read-ahead set"),
        Err(e) => {
            tracing::warn!(%knob, error = %e, "setting the kernel read-ahead failed (it needs root); sequential reads will be slower")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_root_file_system_has_a_device() {
        let device = device_of(Path::new("/")).expect("/ is mounted");
        let (major, minor) = device.split_once(':').expect("MAJOR:MINOR");
        assert!(major.parse::<u32>().is_ok() && minor.parse::<u32>().is_ok(), "{device}");
        assert_eq!(device_of(Path::new("/no/such/mount/point")), None);
    }
}
