//! Worker versions and the minimum version each runtime must run (HEARTH_RUNNER_MIN_VERSION).

use std::collections::BTreeMap;
use std::fmt;

/// A `MAJOR.MINOR.PATCH` version (a leading `v` and a `-pre`/`+build` suffix are accepted and
/// ignored for ordering).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Version(pub u64, pub u64, pub u64);

impl Version {
    /// Parses `1.2.3` (`1.2` and `1` mean `.0` for what is missing).
    ///
    /// # Errors
    /// A message saying what is wrong.
    pub fn parse(text: &str) -> Result<Self, String> {
        let core = text.trim().trim_start_matches('v');
        let core = core.split(['-', '+']).next().unwrap_or_default();
        let mut parts = core.split('.');
        let mut next = |name: &str| -> Result<u64, String> {
            match parts.next() {
                None => Ok(0),
                Some(p) => {
                    p.parse().map_err(|_| format!("`{text}` is not a version like 1.2.3 (bad {name})"))
                }
            }
        };
        let version = Self(next("major")?, next("minor")?, next("patch")?);
        if core.is_empty() || parts.next().is_some() {
            return Err(format!("`{text}` is not a version like 1.2.3"));
        }
        Ok(version)
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.0, self.1, self.2)
    }
}

/// The minimum version per runtime; a runtime not named has none.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MinVersions(pub BTreeMap<String, Version>);

impl MinVersions {
    /// Parses `go=0.5.0,ts=1.0.0`.
    ///
    /// # Errors
    /// A message saying what is wrong.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut out = BTreeMap::new();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (runtime, version) =
                part.split_once('=').ok_or_else(|| format!("`{part}` is not RUNTIME=VERSION"))?;
            out.insert(runtime.trim().to_owned(), Version::parse(version)?);
        }
        Ok(Self(out))
    }

    /// The minimum version of `runtime`, if it has one.
    #[must_use]
    pub fn minimum(&self, runtime: &str) -> Option<Version> {
        self.0.get(runtime).copied()
    }

    /// Whether a worker of `runtime` at `version` passes the gate: always when the runtime has no
    /// minimum; else when `version` parses and is at or above it (compared as versions, so
    /// `0.10.0` is above `0.9.9`).
    #[must_use]
    pub fn admits(&self, runtime: &str, version: &str) -> bool {
        self.0.get(runtime).is_none_or(|min| Version::parse(version).is_ok_and(|v| v >= *min))
    }

    /// Why a worker of `runtime` at `version` may not register, if it may not.
    #[must_use]
    pub fn refusal(&self, runtime: &str, version: &str) -> Option<String> {
        let min = self.0.get(runtime)?;
        match Version::parse(version) {
            Ok(v) if v >= *min => None,
            Ok(v) => Some(format!(
                "workers of runtime `{runtime}` must run version {min} or later (HEARTH_RUNNER_MIN_VERSION); this one runs {v}: upgrade it"
            )),
            Err(e) => Some(format!("{e}; workers of runtime `{runtime}` must run version {min} or later")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_order_and_the_gate_names_the_version_needed() {
        assert!(Version::parse("0.10.0").unwrap() > Version::parse("0.9.9").unwrap());
        assert_eq!(Version::parse("v1.2").unwrap(), Version(1, 2, 0));
        assert_eq!(Version::parse("1.2.3-rc.1").unwrap(), Version(1, 2, 3));
        assert!(
            Version::parse("one").is_err()
                && Version::parse("1.2.3.4").is_err()
                && Version::parse("").is_err()
        );
        let gate = MinVersions::parse("go=0.5.0").unwrap();
        assert_eq!(gate.refusal("go", "0.5.0"), None);
        assert_eq!(gate.refusal("go", "0.6.1"), None);
        assert_eq!(gate.refusal("ts", "0.0.1"), None, "no minimum for ts");
        let refused = gate.refusal("go", "0.4.9").unwrap();
        assert!(refused.contains("0.5.0") && refused.contains("0.4.9"), "{refused}");
        assert!(gate.refusal("go", "banana").is_some());
        assert!(MinVersions::parse("go").is_err());
    }

    #[test]
    fn the_gate_admits_versions_by_order_not_by_text() {
        let gate = MinVersions::parse("go=0.5.0").unwrap();
        assert_eq!(gate.minimum("go"), Some(Version(0, 5, 0)));
        assert_eq!(gate.minimum("ts"), None);
        assert!(gate.admits("go", "0.5.0") && gate.admits("go", "v0.5.1") && gate.admits("go", "0.10.0"));
        // As text, "0.10.0" < "0.5.0" and "0.4.10" > "0.4.1": the gate must not compare text.
        assert!(!gate.admits("go", "0.4.10") && !gate.admits("go", "0.4.9"));
        assert!(!gate.admits("go", "banana"), "an unreadable version is not at the minimum");
        assert!(gate.admits("ts", "banana"), "a runtime without a minimum admits any version");
        for version in ["0.4.9", "0.5.0", "0.10.0", "junk"] {
            assert_eq!(gate.admits("go", version), gate.refusal("go", version).is_none(), "{version}");
        }
    }
}
