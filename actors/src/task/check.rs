//! A task's health check: the book's form (`"/health"`), or an object that also sets when and
//! how often it runs.

use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// How a worker checks that a task is healthy. Empty: no check.
///
/// In JSON, the book's string form: `"/health"` (an HTTP GET of that path on the task's first
/// exposed port, healthy on any 2xx or 3xx) or `"tcp"` (a TCP connection to that port); or an
/// object that may also set the worker's defaults for this task:
/// `{"Check": "/health", "IntervalMs": 2000, "TimeoutMs": 1000, "GraceMs": 5000, "Failures": 3}`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HealthCheck {
    /// `"/path"`, `"tcp"`, or empty for none.
    pub check: String,
    /// Milliseconds between checks (the worker's `health_interval_ms` if unset).
    pub interval_ms: Option<u64>,
    /// Milliseconds one check may take (the worker's `health_timeout_ms` if unset).
    pub timeout_ms: Option<u64>,
    /// Milliseconds after the start before the first check (`health_grace_ms` if unset).
    pub grace_ms: Option<u64>,
    /// Failed checks in a row that make the task unhealthy (`health_failures` if unset).
    pub failures: Option<u32>,
}

impl HealthCheck {
    /// Whether there is no check.
    pub fn is_empty(&self) -> bool {
        self.check.is_empty()
    }

    /// The check: `"/path"` or `"tcp"`.
    pub fn as_str(&self) -> &str {
        &self.check
    }

    fn is_plain(&self) -> bool {
        self.interval_ms.is_none()
            && self.timeout_ms.is_none()
            && self.grace_ms.is_none()
            && self.failures.is_none()
    }

    /// The interval, timeout, grace and failures for this task, given the worker's defaults.
    pub fn settings(
        &self,
        defaults: (Duration, Duration, Duration, u32),
    ) -> (Duration, Duration, Duration, u32) {
        let ms = Duration::from_millis;
        (
            self.interval_ms.map_or(defaults.0, ms),
            self.timeout_ms.map_or(defaults.1, ms),
            self.grace_ms.map_or(defaults.2, ms),
            self.failures.unwrap_or(defaults.3).max(1),
        )
    }
}

impl From<&str> for HealthCheck {
    fn from(check: &str) -> Self {
        HealthCheck {
            check: check.to_string(),
            ..HealthCheck::default()
        }
    }
}

impl PartialEq<&str> for HealthCheck {
    fn eq(&self, other: &&str) -> bool {
        self.is_plain() && self.check == *other
    }
}

impl std::fmt::Display for HealthCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.check)
    }
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct Full {
    check: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    interval_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    timeout_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    grace_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    failures: Option<u32>,
}

impl Serialize for HealthCheck {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if self.is_plain() {
            return serializer.serialize_str(&self.check);
        }
        Full {
            check: self.check.clone(),
            interval_ms: self.interval_ms,
            timeout_ms: self.timeout_ms,
            grace_ms: self.grace_ms,
            failures: self.failures,
        }
        .serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for HealthCheck {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Book(String),
            Full(Full),
        }
        match Raw::deserialize(deserializer) {
            Ok(Raw::Book(check)) => Ok(HealthCheck::from(check.as_str())),
            Ok(Raw::Full(f)) => Ok(HealthCheck {
                check: f.check,
                interval_ms: f.interval_ms,
                timeout_ms: f.timeout_ms,
                grace_ms: f.grace_ms,
                failures: f.failures,
            }),
            Err(_) => Err(serde::de::Error::custom(
                "expected a path such as \"/health\", \"tcp\", or {\"Check\": \"/health\", \"IntervalMs\": 2000, \"TimeoutMs\": 1000, \"GraceMs\": 5000, \"Failures\": 3}",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_book_s_string_and_the_richer_object_both_read_and_write_back() {
        let book: HealthCheck = serde_json::from_str("\"/health\"").unwrap();
        assert_eq!(book, "/health");
        assert_eq!(serde_json::to_string(&book).unwrap(), "\"/health\"");
        let rich: HealthCheck =
            serde_json::from_str(r#"{"Check": "tcp", "IntervalMs": 500, "Failures": 2}"#).unwrap();
        assert_eq!(
            (rich.as_str(), rich.interval_ms, rich.failures),
            ("tcp", Some(500), Some(2))
        );
        let back: HealthCheck =
            serde_json::from_str(&serde_json::to_string(&rich).unwrap()).unwrap();
        assert_eq!(back, rich);
        let defaults = (
            Duration::from_secs(5),
            Duration::from_secs(2),
            Duration::from_secs(5),
            3,
        );
        let (interval, timeout, _, failures) = rich.settings(defaults);
        assert_eq!(
            (interval, timeout, failures),
            (Duration::from_millis(500), Duration::from_secs(2), 2)
        );
        assert!(serde_json::from_str::<HealthCheck>("{\"Chek\": \"/x\"}").is_err());
    }
}
