//! A guest that boots Debian's cloud kernel under qemu, for what this machine's kernel
//! lacks (IPVS, dummy interfaces): `cplb lab --kernel vm` and the IPVS tests run in it.
//!
//! The image is the kernel of the package `linux-image-cloud-amd64` depends on (fetched with
//! `apt-get download`, unpacked with `dpkg-deb -x`) and an initramfs (`cpio`, gzip) holding
//! `busybox-static`, the kernel's network modules and the programs asked for with their
//! shared libraries. Both are cached under [`cache_dir`] and rebuilt when a program changes.
//! The guest has no network and no shared folder (the cloud kernel has no 9p): its first
//! serial port is the console, its second a command channel, one shell line in, its output
//! and exit code out. qemu emulates the CPU (TCG): no KVM is relied on.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Where images are cached unless `CPLB_VM_CACHE` says otherwise.
pub const DEFAULT_CACHE: &str = "/var/cache/cplb/vm";
/// The metapackage whose kernel the guest boots.
const KERNEL_METAPACKAGE: &str = "linux-image-cloud-amd64";
/// Where a guest's programs are installed, in the guest's PATH.
pub const GUEST_BIN: &str = "/usr/bin";
/// Printed on the command channel after a command's output: `END <exit code>`.
const END: &str = "@@cplb-vm-end";
/// Printed on the command channel when a command arrived damaged (it is sent again).
const GARBLED: &str = "@@cplb-vm-garbled";
/// Printed on the command channel when the guest is ready for commands.
const READY: &str = "@@cplb-vm-ready";
/// The Debian packages the guest is made from (besides the kernel).
pub const PACKAGES: &[&str] =
    &["qemu-system-x86", "busybox-static", "cpio", "kmod", "ipvsadm", "nftables", "iproute2"];

/// The guest's `/init`: mounts, modules, the command loop on the second serial port.
const INIT: &str = r#"#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/usr/bin:/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mount -t tmpfs run /run
mount -t tmpfs tmp /tmp
mkdir -p /var /etc && ln -s /run /var/run && ln -sf /proc/mounts /etc/mtab
for m in ip_vs ip_vs_rr ip_vs_wrr ip_vs_lc ip_vs_wlc ip_vs_lblc ip_vs_dh ip_vs_sh ip_vs_sed ip_vs_nq \
         ip_vs_ftp dummy veth bridge nf_tables nft_chain_nat nft_nat nft_ct nft_numgen nft_hash \
         nft_redir nft_masq nf_conntrack ipip; do
    modprobe "$m" 2>/dev/null || echo "modprobe $m failed"
done
ip link set lo up
echo "guest up after $(cut -d' ' -f1 /proc/uptime) s"
# busybox's shell runs its own applets before PATH: iproute2's ip is a function.
echo 'ip() { /usr/bin/ip "$@"; }' > /etc/cplb.sh
stty -F /dev/ttyS1 raw -echo
exec 3<>/dev/ttyS1
echo "@@cplb-vm-ready" >&3
# Each command comes as "LENGTH LINE": a line that lost bytes on the way is refused and
# sent again rather than run mangled.
while IFS= read -r msg <&3; do
    len="${msg%% *}"
    line="${msg#* }"
    if [ "${#line}" != "$len" ]; then
        echo "@@cplb-vm-garbled" >&3
        continue
    fi
    sh -c ". /etc/cplb.sh; $line" >/tmp/out 2>&1 </dev/null
    rc=$?
    cat /tmp/out >&3
    echo "@@cplb-vm-end $rc" >&3
done
"#;

/// The directory images are cached in.
pub fn cache_dir() -> PathBuf {
    std::env::var_os("CPLB_VM_CACHE").map_or_else(|| PathBuf::from(DEFAULT_CACHE), PathBuf::from)
}

/// A bootable guest: kernel and initramfs.
#[derive(Debug, Clone)]
pub struct Image {
    /// The kernel (`vmlinuz`).
    pub kernel: PathBuf,
    /// The initramfs.
    pub initrd: PathBuf,
    /// The kernel release (`6.1.0-N-cloud-amd64`).
    pub release: String,
}

/// Why a guest could not be had, in words for an operator.
pub type Error = String;

/// Builds the image with `programs` installed in [`GUEST_BIN`] (by file name), or reuses
/// the cached one when nothing changed.
pub fn image(programs: &[PathBuf]) -> Result<Image, Error> {
    for (tool, package) in [
        ("qemu-system-x86_64", "qemu-system-x86"),
        ("cpio", "cpio"),
        ("depmod", "kmod"),
        ("apt-get", "apt"),
        ("dpkg-deb", "dpkg"),
    ] {
        which(tool).ok_or_else(|| format!("{tool} is not installed (Debian package {package})"))?;
    }
    let busybox = ["/bin/busybox", "/usr/bin/busybox"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .ok_or("busybox is not installed (Debian package busybox-static)")?;
    let observe: Vec<PathBuf> = ["ip", "ipvsadm", "nft"]
        .iter()
        .map(|t| which(t).ok_or_else(|| format!("{t} is not installed (needed in the guest)")))
        .collect::<Result<_, _>>()?;
    let cache = cache_dir();
    std::fs::create_dir_all(&cache).map_err(|e| format!("creating {}: {e}", cache.display()))?;
    let (kernel_root, release) = kernel(&cache)?;
    let mut all: Vec<PathBuf> = observe;
    all.extend(programs.iter().cloned());
    let stamp = stamp(&release, &busybox, &all)?;
    let initrd = cache.join(format!("initrd-{stamp:016x}.cpio.gz"));
    if !initrd.exists() {
        build_initrd(&cache, &kernel_root, &release, &busybox, &all, &initrd)?;
        // Older images are of binaries that changed since: they go.
        for entry in std::fs::read_dir(&cache).map_err(|e| e.to_string())?.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with("initrd-") && entry.path() != initrd {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
    Ok(Image {
        kernel: kernel_root.join("boot").join(format!("vmlinuz-{release}")),
        initrd,
        release,
    })
}

/// The kernel package, downloaded and unpacked once: its root and release.
fn kernel(cache: &Path) -> Result<(PathBuf, String), Error> {
    // Package lists may be missing on a fresh machine: read them once, then ask again.
    let package = kernel_package()
        .or_else(|_| {
            run(Command::new("apt-get").args(["update", "-qq"]))?;
            kernel_package()
        })
        .or_else(|e| {
            // Offline (no package lists): whatever kernel is cached already.
            std::fs::read_dir(cache)
                .ok()
                .and_then(|d| {
                    d.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).find(|n| {
                        n.starts_with("linux-image-") && cache.join(n).join("boot").exists()
                    })
                })
                .ok_or(e)
        })?;
    let release = package.trim_start_matches("linux-image-").to_owned();
    let root = cache.join(&package);
    if root.join("boot").join(format!("vmlinuz-{release}")).exists() {
        return Ok((root, release));
    }
    let download = cache.join("download");
    let _ = std::fs::remove_dir_all(&download);
    std::fs::create_dir_all(&download)
        .map_err(|e| format!("creating {}: {e}", download.display()))?;
    run(Command::new("apt-get").args(["download", &package]).current_dir(&download))?;
    let deb = std::fs::read_dir(&download)
        .map_err(|e| e.to_string())?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "deb"))
        .ok_or_else(|| format!("apt-get download {package} left no .deb"))?;
    let unpacking = cache.join(format!("{package}.partial"));
    let _ = std::fs::remove_dir_all(&unpacking);
    run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&unpacking))?;
    run(Command::new("depmod").arg("-b").arg(&unpacking).arg(&release))?;
    std::fs::rename(&unpacking, &root).map_err(|e| format!("caching the kernel: {e}"))?;
    let _ = std::fs::remove_dir_all(&download);
    Ok((root, release))
}

/// `linux-image-6.1.0-N-cloud-amd64`: what the metapackage depends on now.
fn kernel_package() -> Result<String, Error> {
    let out = Command::new("apt-cache")
        .args(["depends", KERNEL_METAPACKAGE])
        .output()
        .map_err(|e| format!("apt-cache: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("Depends: "))
        .map(str::trim)
        .find(|p| p.starts_with("linux-image-") && p.ends_with("-cloud-amd64"))
        .map(str::to_owned)
        .ok_or_else(|| {
            format!("no kernel package for {KERNEL_METAPACKAGE} (run `apt-get update` first)")
        })
}

/// Identifies an initramfs: the init script, the kernel, and every program's path, size and
/// modification time.
fn stamp(release: &str, busybox: &Path, programs: &[PathBuf]) -> Result<u64, Error> {
    use std::hash::Hasher as _;
    let mut h = fnv::FnvHasher::default();
    let mut feed = |bytes: &[u8]| h.write(bytes);
    feed(INIT.as_bytes());
    feed(release.as_bytes());
    for p in std::iter::once(&busybox.to_path_buf()).chain(programs) {
        let meta = std::fs::metadata(p).map_err(|e| format!("{}: {e}", p.display()))?;
        let mtime = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_nanos());
        feed(p.as_os_str().as_encoded_bytes());
        feed(&meta.len().to_le_bytes());
        feed(&mtime.to_le_bytes());
    }
    Ok(h.finish())
}

fn build_initrd(
    cache: &Path,
    kernel_root: &Path,
    release: &str,
    busybox: &Path,
    programs: &[PathBuf],
    out: &Path,
) -> Result<(), Error> {
    let root = cache.join("initrd-root");
    let _ = std::fs::remove_dir_all(&root);
    for dir in ["bin", "usr/bin", "proc", "sys", "dev", "run", "tmp", "lib", "lib64", "etc"] {
        mkdir(&root.join(dir))?;
    }
    copy(busybox, &root.join("bin/busybox"))?;
    // Debian's busybox-static needs nothing; a dynamic busybox its libraries.
    copy_libraries(busybox, &root)?;
    let modules = kernel_root.join("lib/modules").join(release);
    let guest_modules = root.join("lib/modules").join(release);
    mkdir(&guest_modules.join("kernel/drivers"))?;
    for entry in std::fs::read_dir(&modules).map_err(|e| format!("{}: {e}", modules.display()))? {
        let path = entry.map_err(|e| e.to_string())?.path();
        if path.is_file() {
            copy(&path, &guest_modules.join(path.file_name().unwrap_or_default()))?;
        }
    }
    // The network stack and its helpers are what the guest needs; the rest stays out.
    run(Command::new("cp")
        .arg("-a")
        .arg(modules.join("kernel/net"))
        .arg(guest_modules.join("kernel")))?;
    run(Command::new("cp")
        .arg("-a")
        .arg(modules.join("kernel/lib"))
        .arg(guest_modules.join("kernel")))?;
    run(Command::new("cp")
        .arg("-a")
        .arg(modules.join("kernel/drivers/net"))
        .arg(guest_modules.join("kernel/drivers")))?;
    for program in programs {
        let name =
            program.file_name().ok_or_else(|| format!("{}: no file name", program.display()))?;
        copy(program, &root.join("usr/bin").join(name))?;
        copy_libraries(program, &root)?;
    }
    let init = root.join("init");
    std::fs::write(&init, INIT).map_err(|e| format!("writing /init: {e}"))?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&init, std::fs::Permissions::from_mode(0o755))
        .map_err(|e| e.to_string())?;
    let partial = out.with_extension("partial");
    let pack = format!("find . | cpio -o -H newc --quiet | gzip -1 > '{}'", partial.display());
    run(Command::new("sh").arg("-c").arg(pack).current_dir(&root))?;
    std::fs::rename(&partial, out).map_err(|e| e.to_string())?;
    let _ = std::fs::remove_dir_all(&root);
    Ok(())
}

/// Copies the libraries `program` loads into the guest's root, at their paths.
fn copy_libraries(program: &Path, root: &Path) -> Result<(), Error> {
    for lib in libraries(program)? {
        let target = root.join(lib.strip_prefix("/").unwrap_or(&lib));
        if !target.exists() {
            if let Some(dir) = target.parent() {
                mkdir(dir)?;
            }
            copy(&lib, &target)?;
        }
    }
    Ok(())
}

/// The shared libraries a program loads (and the loader), from `ldd`.
fn libraries(program: &Path) -> Result<Vec<PathBuf>, Error> {
    let out = Command::new("ldd").arg(program).output().map_err(|e| format!("ldd: {e}"))?;
    // A static program: "not a dynamic executable", nothing to copy.
    Ok(String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter(|w| w.starts_with('/'))
        .map(PathBuf::from)
        .filter(|p| p.exists())
        .collect())
}

/// A running guest with its command channel.
#[derive(Debug)]
pub struct Guest {
    process: Process,
    channel: BufReader<UnixStream>,
    /// The console log (the kernel's and `/init`'s output).
    pub console: PathBuf,
    /// How long the boot took, to the command channel's first line.
    pub boot_time: Duration,
}

/// How the guest answered a command.
enum Reply {
    /// It ran, with this exit code.
    Exit(i32),
    /// It arrived damaged and did not run.
    Garbled,
}

/// qemu: started by this process, or by an earlier one (`lab up`) and known by its pid.
#[derive(Debug)]
enum Process {
    Child(Child),
    Detached(u32),
}

impl Process {
    fn exited(&mut self) -> bool {
        match self {
            Self::Child(c) => !matches!(c.try_wait(), Ok(None)),
            Self::Detached(pid) => !Path::new(&format!("/proc/{pid}")).exists(),
        }
    }

    fn kill(&mut self) {
        match self {
            Self::Child(c) => {
                let _ = c.kill();
                let _ = c.wait();
            }
            Self::Detached(pid) => {
                if let Ok(pid) = i32::try_from(*pid) {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
            }
        }
    }
}

/// How the guest's CPU runs: emulated. KVM is not relied on: where /dev/kvm exists it may
/// still fail under nesting ("KVM internal error" on this machine), and CI may have none.
pub fn accelerator() -> &'static str {
    "tcg"
}

impl Guest {
    /// Boots `image`, with its console log and command socket in `dir`, and waits until
    /// it takes commands. `detached`: qemu outlives this process (`cplb lab up`).
    pub fn boot(image: &Image, dir: &Path, detached: bool) -> Result<Self, Error> {
        mkdir(dir)?;
        let socket = dir.join("channel.sock");
        let console = dir.join("console.log");
        let _ = std::fs::remove_file(&socket);
        let log =
            std::fs::File::create(&console).map_err(|e| format!("{}: {e}", console.display()))?;
        let mut qemu = Command::new("qemu-system-x86_64");
        qemu.args(["-machine", &format!("q35,accel={}", accelerator())])
            .args(["-m", "2048", "-smp", "2", "-nographic", "-no-reboot", "-nodefaults"])
            .arg("-kernel")
            .arg(&image.kernel)
            .arg("-initrd")
            .arg(&image.initrd)
            .args(["-append", "console=ttyS0 quiet panic=-1"])
            .args(["-serial", "stdio"])
            .arg("-chardev")
            .arg(format!("socket,id=channel,path={},server=on,wait=off", socket.display()))
            .args(["-serial", "chardev:channel"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log);
        if detached {
            use std::os::unix::process::CommandExt;
            // Its own process group: the terminal's ^C to `lab up` does not reach it.
            qemu.process_group(0);
        }
        let start = Instant::now();
        let mut child = qemu.spawn().map_err(|e| format!("starting qemu: {e}"))?;
        std::fs::write(dir.join("qemu.pid"), child.id().to_string()).map_err(|e| e.to_string())?;
        let stream = loop {
            match UnixStream::connect(&socket) {
                Ok(s) => break s,
                Err(_) if start.elapsed() < Duration::from_secs(30) => {
                    if let Ok(Some(status)) = child.try_wait() {
                        return Err(format!("qemu exited ({status}): {}", tail(&console)));
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => return Err(format!("qemu's command socket: {e}")),
            }
        };
        let process = if detached { Process::Detached(child.id()) } else { Process::Child(child) };
        let mut guest =
            Self { process, channel: BufReader::new(stream), console, boot_time: Duration::ZERO };
        if let Err(e) =
            guest.read_until_end(&mut String::new(), Some(READY), Duration::from_secs(180))
        {
            guest.process.kill();
            return Err(e);
        }
        guest.boot_time = start.elapsed();
        Ok(guest)
    }

    /// Reattaches to a guest booted (detached) earlier with its files in `dir`.
    pub fn attach(dir: &Path) -> Result<Self, Error> {
        let pid: u32 = std::fs::read_to_string(dir.join("qemu.pid"))
            .map_err(|_| "no guest is running (`cplb lab up --kernel vm` first)".to_owned())?
            .trim()
            .parse()
            .map_err(|_| "unreadable qemu.pid".to_owned())?;
        let mut process = Process::Detached(pid);
        if process.exited() {
            return Err(format!("the guest (qemu pid {pid}) is not running"));
        }
        let stream = UnixStream::connect(dir.join("channel.sock"))
            .map_err(|e| format!("the guest's command socket: {e}"))?;
        Ok(Self {
            process,
            channel: BufReader::new(stream),
            console: dir.join("console.log"),
            boot_time: Duration::ZERO,
        })
    }

    /// Runs one shell line in the guest; its output (stdout and stderr) and exit code.
    pub fn run(&mut self, line: &str, limit: Duration) -> Result<(i32, String), Error> {
        if line.contains('\n') {
            return Err("one line at a time".into());
        }
        let message = format!("{} {line}\n", line.len());
        for _ in 0..5 {
            // In small pieces: an emulated UART busy with a loaded guest keeps up better.
            for piece in message.as_bytes().chunks(16) {
                self.channel
                    .get_mut()
                    .write_all(piece)
                    .map_err(|e| format!("sending to the guest: {e}"))?;
                std::thread::sleep(Duration::from_millis(1));
            }
            let mut out = String::new();
            match self.read_until_end(&mut out, None, limit)? {
                Reply::Garbled => continue,
                Reply::Exit(code) => return Ok((code, out)),
            }
        }
        Err(format!("the guest kept receiving `{line}` damaged"))
    }

    /// Powers the guest off and waits for qemu to exit; the console's last lines.
    pub fn stop(mut self) -> String {
        let _ = self.channel.get_mut().write_all(b"poweroff -f\n");
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline && !self.process.exited() {
            std::thread::sleep(Duration::from_millis(50));
        }
        if !self.process.exited() {
            self.process.kill();
        }
        tail(&self.console)
    }

    /// Reads the channel up to the end marker (its exit code) or, with `marker`, up to
    /// that line; other lines are collected into `out`.
    fn read_until_end(
        &mut self,
        out: &mut String,
        marker: Option<&str>,
        limit: Duration,
    ) -> Result<Reply, Error> {
        let start = Instant::now();
        let mut line = String::new();
        loop {
            if self.process.exited() {
                return Err(format!("the guest stopped: {}", tail(&self.console)));
            }
            line.clear();
            let remaining = limit.saturating_sub(start.elapsed()).max(Duration::from_millis(10));
            let wait = remaining.min(Duration::from_millis(500));
            self.channel.get_mut().set_read_timeout(Some(wait)).map_err(|e| e.to_string())?;
            match self.channel.read_line(&mut line) {
                Ok(0) => {
                    return Err(format!("the guest closed its channel: {}", tail(&self.console)));
                }
                Ok(_) => {
                    let text = line.trim_end_matches(['\r', '\n']);
                    if marker.is_some_and(|m| text == m) {
                        return Ok(Reply::Exit(0));
                    }
                    if text == GARBLED {
                        return Ok(Reply::Garbled);
                    }
                    if let Some(code) = text.strip_prefix(END) {
                        return Ok(Reply::Exit(code.trim().parse().unwrap_or(-1)));
                    }
                    out.push_str(text);
                    out.push('\n');
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(e) => return Err(format!("reading from the guest: {e}")),
            }
            if start.elapsed() >= limit {
                return Err(format!(
                    "no answer from the guest in {limit:?} (so far: {out}): {}",
                    tail(&self.console)
                ));
            }
        }
    }
}

impl Drop for Guest {
    /// A guest this process started goes with it (a detached one is `lab down`'s to stop).
    fn drop(&mut self) {
        if let Process::Child(child) = &mut self.process {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn tail(console: &Path) -> String {
    let text = std::fs::read_to_string(console).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    format!(
        "console ({}): {}",
        console.display(),
        lines[lines.len().saturating_sub(15)..].join("\n")
    )
}

fn which(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
}

fn run(command: &mut Command) -> Result<(), Error> {
    let out = command.output().map_err(|e| format!("{command:?}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("{command:?} failed: {}", String::from_utf8_lossy(&out.stderr).trim()))
    }
}

fn mkdir(dir: &Path) -> Result<(), Error> {
    std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))
}

fn copy(from: &Path, to: &Path) -> Result<(), Error> {
    std::fs::copy(from, to)
        .map(|_| ())
        .map_err(|e| format!("copying {} to {}: {e}", from.display(), to.display()))
}
