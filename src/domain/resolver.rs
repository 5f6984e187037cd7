//! The runner resolver's rules, pure: org flag → ramp → default, failure-closed, kill switch.
//!
//! The I/O (reading the organization) happens in `runner/`; this module only decides, from
//! what was read, which runner a dispatch goes to and why.

use std::fmt;

/// What reading the organization's flags gave.
#[derive(Debug, Clone)]
pub enum OrgFlags {
    /// The organization row was read; its `features` JSON.
    Found(serde_json::Value),
    /// No such organization row.
    Missing,
    /// The database failed.
    Error(String),
}

/// A percentage ramp: organizations whose bucket (0–99) falls in a runner's share go to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ramp {
    /// `(runner, percent)` in order; shares are stacked from bucket 0.
    pub shares: Vec<(String, u8)>,
}

impl Ramp {
    /// Parses `go=10` or `go=10,rust=5`: runners must be known and shares total at most 100.
    ///
    /// # Errors
    /// A message saying what is wrong with the value.
    pub fn parse(text: &str, runners: &[String]) -> Result<Self, String> {
        let mut shares = Vec::new();
        let mut total = 0u32;
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (runner, percent) =
                part.split_once('=').ok_or_else(|| format!("`{part}` is not RUNNER=PERCENT"))?;
            let runner = runner.trim();
            if !runners.iter().any(|r| r == runner) {
                return Err(format!("unknown runner `{runner}` (HEARTH_RUNNERS is {})", runners.join(",")));
            }
            let percent: u8 = percent
                .trim()
                .parse()
                .ok()
                .filter(|p| *p <= 100)
                .ok_or_else(|| format!("`{part}`: the percentage must be 0 to 100"))?;
            total += u32::from(percent);
            shares.push((runner.to_owned(), percent));
        }
        if total > 100 {
            return Err(format!("the shares add up to {total}%, more than 100%"));
        }
        Ok(Self { shares })
    }

    /// The runner for `bucket` (0–99), if the bucket falls in a share.
    #[must_use]
    pub fn pick(&self, bucket: u8) -> Option<&(String, u8)> {
        let mut upper = 0u32;
        self.shares.iter().find(|(_, percent)| {
            upper += u32::from(*percent);
            u32::from(bucket) < upper
        })
    }
}

impl fmt::Display for Ramp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.shares.iter().map(|(r, p)| format!("{r}={p}")).collect();
        f.write_str(&parts.join(","))
    }
}

/// The stable bucket (0–99) of an organization id: FNV-1a 64, so it never changes across
/// versions or machines.
#[must_use]
pub fn bucket(org_id: &str) -> u8 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in org_id.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    u8::try_from(hash % 100).unwrap_or(0)
}

/// Global resolver settings.
#[derive(Debug, Clone)]
pub struct ResolverRules {
    /// Known runners; the first is the default.
    pub runners: Vec<String>,
    /// The percentage ramp, if any.
    pub ramp: Option<Ramp>,
    /// `false` when HEARTH_RUNNER_FLAGS=off: flags and ramp are ignored.
    pub flags_enabled: bool,
}

/// A resolver's decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// The runner.
    pub runner: String,
    /// Why, for `runner_reason`.
    pub reason: String,
}

impl ResolverRules {
    /// The default runner (first of HEARTH_RUNNERS).
    #[must_use]
    pub fn default_runner(&self) -> &str {
        self.runners.first().map_or("ts", String::as_str)
    }

    fn fallback(&self, reason: String) -> Decision {
        Decision { runner: self.default_runner().to_owned(), reason }
    }

    /// Decides the runner for organization `org_id` whose flags read as `flags`.
    #[must_use]
    pub fn decide(&self, org_id: &str, flags: &OrgFlags) -> Decision {
        if !self.flags_enabled {
            return self.fallback("default runner: runner flags are off (HEARTH_RUNNER_FLAGS=off)".into());
        }
        let features = match flags {
            OrgFlags::Found(features) => features,
            OrgFlags::Missing => {
                return self.fallback(format!("failure-closed: organization {org_id} not found"));
            }
            OrgFlags::Error(e) => {
                return self.fallback(format!("failure-closed: could not read organization flags ({e})"));
            }
        };
        // Flags are an object: any other JSON (a string, an array, a number, null) is malformed,
        // and must not fall through to the ramp as if no flag were set.
        let Some(features) = features.as_object() else {
            let shown: String = features.to_string().chars().take(60).collect();
            return self.fallback(format!(
                "failure-closed: malformed organization features {shown} (not a JSON object)"
            ));
        };
        match features.get("runner_default") {
            None | Some(serde_json::Value::Null) => {}
            Some(serde_json::Value::String(runner)) if self.runners.contains(runner) => {
                return Decision {
                    runner: runner.clone(),
                    reason: format!("organization flag runner_default={runner}"),
                };
            }
            Some(other) => {
                let shown: String = other.to_string().chars().take(60).collect();
                return self.fallback(format!("failure-closed: invalid runner_default value {shown}"));
            }
        }
        if let Some(ramp) = &self.ramp {
            let b = bucket(org_id);
            if let Some((runner, percent)) = ramp.pick(b) {
                return Decision {
                    runner: runner.clone(),
                    reason: format!("ramp {runner}={percent}% (organization bucket {b})"),
                };
            }
        }
        self.fallback("default runner".into())
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn rules(ramp: Option<&str>) -> ResolverRules {
        let runners = vec!["ts".to_owned(), "go".to_owned()];
        let ramp = ramp.map(|r| Ramp::parse(r, &runners).unwrap());
        ResolverRules { runners, ramp, flags_enabled: true }
    }

    #[test]
    fn org_flag_wins() {
        let d = rules(Some("go=0")).decide("org_a", &OrgFlags::Found(json!({"runner_default": "go"})));
        assert_eq!(d.runner, "go");
        assert!(d.reason.contains("runner_default=go"));
    }

    #[test]
    fn no_flag_and_no_ramp_gives_the_default() {
        let d = rules(None).decide("org_a", &OrgFlags::Found(json!({})));
        assert_eq!(d, Decision { runner: "ts".into(), reason: "default runner".into() });
        let null_flag = rules(None).decide("org_a", &OrgFlags::Found(json!({"runner_default": null})));
        assert_eq!(null_flag.runner, "ts");
    }

    #[test]
    fn ramp_buckets_organizations_stably() {
        let full = rules(Some("go=100")).decide("org_a", &OrgFlags::Found(json!({})));
        assert_eq!(full.runner, "go");
        assert!(full.reason.starts_with("ramp go=100%"));
        assert_eq!(rules(Some("go=0")).decide("org_a", &OrgFlags::Found(json!({}))).runner, "ts");
        // About 10% of many organizations land in a 10% ramp, and each always lands the same way.
        let ten = rules(Some("go=10"));
        let ids: Vec<String> = (0..2000).map(|i| format!("org_{i:05}")).collect();
        let on_go =
            ids.iter().filter(|id| ten.decide(id, &OrgFlags::Found(json!({}))).runner == "go").count();
        assert!((120..=280).contains(&on_go), "{on_go} of 2000 on a 10% ramp");
        assert_eq!(bucket("org_00042"), bucket("org_00042"));
        let fifty = rules(Some("go=50"));
        let widened = ids
            .iter()
            .filter(|id| ten.decide(id, &OrgFlags::Found(json!({}))).runner == "go")
            .all(|id| fifty.decide(id, &OrgFlags::Found(json!({}))).runner == "go");
        assert!(widened, "widening a ramp keeps the organizations already on it");
    }

    #[test]
    fn failure_closed_on_missing_org_bad_value_and_db_error() {
        let r = rules(Some("go=100"));
        for (flags, needle) in [
            (OrgFlags::Missing, "not found"),
            (OrgFlags::Error("disk I/O error".into()), "could not read"),
            (OrgFlags::Found(json!({"runner_default": "cobol"})), "invalid runner_default"),
            (OrgFlags::Found(json!({"runner_default": 7})), "invalid runner_default"),
        ] {
            let d = r.decide("org_a", &flags);
            assert_eq!(d.runner, "ts", "{flags:?}");
            assert!(d.reason.starts_with("failure-closed") && d.reason.contains(needle), "{}", d.reason);
        }
    }

    #[test]
    fn features_that_are_not_an_object_are_malformed_and_fail_closed_even_with_a_ramp() {
        for ramp in [None, Some("go=100")] {
            for features in [json!("go"), json!([]), json!(42), json!(null)] {
                let d = rules(ramp).decide("org_a", &OrgFlags::Found(features.clone()));
                assert_eq!(d.runner, "ts", "features {features} with ramp {ramp:?}: {}", d.reason);
                assert!(
                    d.reason.starts_with("failure-closed") && d.reason.contains("malformed"),
                    "features {features} with ramp {ramp:?}: {}",
                    d.reason
                );
            }
        }
    }

    #[test]
    fn kill_switch_ignores_flags_and_ramp() {
        let mut r = rules(Some("go=100"));
        r.flags_enabled = false;
        let d = r.decide("org_a", &OrgFlags::Found(json!({"runner_default": "go"})));
        assert_eq!(d.runner, "ts");
        assert!(d.reason.contains("HEARTH_RUNNER_FLAGS=off"));
    }

    #[test]
    fn ramp_values_are_validated() {
        let runners = vec!["ts".to_owned(), "go".to_owned()];
        assert!(Ramp::parse("go=10", &runners).is_ok());
        assert!(Ramp::parse("go", &runners).is_err());
        assert!(Ramp::parse("go=101", &runners).is_err());
        assert!(Ramp::parse("rust=5", &runners).is_err());
        assert!(Ramp::parse("go=60,ts=50", &runners).is_err());
    }
}
