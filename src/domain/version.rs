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
}
