//! KTAP-style result reporting.

use std::fmt::Display;
use std::io::Write;
use std::process::ExitCode;

/// Exit status when every check was skipped (kselftest's KSFT_SKIP).
pub const EXIT_SKIP: u8 = 4;

/// Numbered results, printed as they happen.
#[derive(Debug, Default)]
pub struct Ktap {
    count: u32,
    failed: u32,
    skipped: u32,
}

fn emit(line: &str) {
    let mut out = std::io::stdout().lock();
    // Output errors (e.g. a closed pipe) cannot be reported anywhere useful.
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// Keeps a reason on one line, as KTAP directives must be.
fn one_line(s: &str) -> String {
    s.replace(['\n', '\r'], " ")
}

impl Ktap {
    /// Starts the report.
    pub fn new() -> Self {
        emit("KTAP version 1");
        Self::default()
    }

    /// Reports one result; `reason` is only evaluated on failure. Returns `pass`.
    pub fn check<R: Display>(
        &mut self,
        name: &str,
        pass: bool,
        reason: impl FnOnce() -> R,
    ) -> bool {
        self.count += 1;
        if pass {
            emit(&format!("ok {} - {name}", self.count));
        } else {
            self.failed += 1;
            emit(&format!(
                "not ok {} - {name} # {}",
                self.count,
                one_line(&reason().to_string())
            ));
        }
        pass
    }

    /// Reports a failure.
    pub fn fail(&mut self, name: &str, reason: &dyn Display) {
        self.check(name, false, || reason.to_string());
    }

    /// Reports a skipped check.
    pub fn skip(&mut self, name: &str, reason: &dyn Display) {
        self.count += 1;
        self.skipped += 1;
        emit(&format!(
            "ok {} - {name} # SKIP {}",
            self.count,
            one_line(&reason.to_string())
        ));
    }

    /// Prints a diagnostic line.
    pub fn diag(&self, msg: &str) {
        emit(&format!("# {}", one_line(msg)));
    }

    /// Passes if `result` is `Ok`, returning the value.
    pub fn expect_ok<T, E: Display>(&mut self, name: &str, result: Result<T, E>) -> Option<T> {
        match result {
            Ok(v) => {
                self.check(name, true, String::new);
                Some(v)
            }
            Err(e) => {
                self.fail(name, &e);
                None
            }
        }
    }

    /// Passes if `result` failed with `errno`.
    pub fn expect_errno<T>(&mut self, name: &str, result: blktap::Result<T>, errno: i32) -> bool {
        let want = blktap::Errno(errno).name();
        match result {
            Ok(_) => self.check(name, false, || format!("succeeded, expected {want}")),
            Err(e) => self.check(name, e.is_errno(errno), || format!("{e}, expected {want}")),
        }
    }

    /// Prints the plan and totals; the exit status is 1 on any failure, 4 if everything was
    /// skipped, else 0.
    pub fn finish(self) -> ExitCode {
        emit(&format!("1..{}", self.count));
        emit(&format!(
            "# totals: pass:{} fail:{} skip:{}",
            self.count - self.failed - self.skipped,
            self.failed,
            self.skipped
        ));
        if self.failed > 0 {
            ExitCode::FAILURE
        } else if self.skipped == self.count {
            ExitCode::from(EXIT_SKIP)
        } else {
            ExitCode::SUCCESS
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counting() {
        let mut t = Ktap::new();
        assert!(t.check("a", true, || "x"));
        assert!(!t.expect_errno("b", Ok::<(), blktap::Error>(()), libc::EINVAL));
        t.skip("c", &"why");
        assert_eq!((t.count, t.failed, t.skipped), (3, 1, 1));
        assert!(t.expect_errno(
            "d",
            Err::<(), _>(blktap::Error::Sys {
                context: "x".into(),
                errno: blktap::Errno(libc::EINVAL)
            }),
            libc::EINVAL
        ));
        assert_eq!(one_line("a\nb"), "a b");
    }
}
