//! The rules between parameters: each value can be within its own bounds and still make no sense beside another.
//!
//! Owns the cross-parameter rules (the hard timeout at least the deadline,
//! the camera's size limits, the reserved source name, ...) and the one rule
//! between the parameters and the policies' manifests: the watchdog's bound
//! on a proposed action must be above every manifest's clip. The manifests'
//! clips are read once at start and passed in as [`ActionClip`]s; this module
//! never reads a file.

use super::{err, Config, ConfigError};

/// The largest side of a frame the node may be told to accept.
const MAX_PIXELS_PER_SIDE: u32 = 16_384;

/// One policy manifest's action clip, as read at start.
#[derive(Debug, Clone, PartialEq)]
pub struct ActionClip {
    /// The manifest, for the message.
    pub manifest: String,
    /// Its `action.clip`: (linear.x, linear.y, angular.z).
    pub clip: [f32; 3],
}

/// The rules between parameters.
pub(super) fn between(c: &Config) -> Result<(), ConfigError> {
    let (w, h) = (c.camera.max_width, c.camera.max_height);
    if w == 0 || h == 0 || w > MAX_PIXELS_PER_SIDE || h > MAX_PIXELS_PER_SIDE {
        return Err(err(
            "camera.max_width/max_height",
            format!("{w}x{h}"),
            format!("pixel counts in 1..={MAX_PIXELS_PER_SIDE}"),
        ));
    }
    if c.mux.sources.contains_key("policy") {
        return Err(err("mux.sources.policy", "{...}", "another name: 'policy' is the autonomy source"));
    }
    let wd = &c.watchdog;
    if wd.hard_timeout_s < wd.deadline_s {
        return Err(err("watchdog.hard_timeout_s", wd.hard_timeout_s, "a timeout >= watchdog.deadline_s"));
    }
    if wd.max_cooldown_s < wd.cooldown_s {
        return Err(err("watchdog.max_cooldown_s", wd.max_cooldown_s, "a value >= watchdog.cooldown_s"));
    }
    if wd.window_misses > wd.window {
        return Err(err("watchdog.window_misses", wd.window_misses, "at most watchdog.window"));
    }
    for (name, model) in [("hybrid", &c.policy.hybrid), ("pure", &c.policy.pure)] {
        remote(name, &model.remote, wd.hard_timeout_s)?;
    }
    Ok(())
}

/// A remote server's address, and its deadline within the hang timeout (a
/// request past the hard timeout would be cancelled as a hang instead).
fn remote(policy: &str, r: &super::RemoteConfig, hard_timeout_s: f64) -> Result<(), ConfigError> {
    let key = |k: &str| format!("policy.{policy}.remote.{k}");
    if !r.enabled() {
        return Ok(());
    }
    let https = r.url.starts_with("https://");
    // host:port, nothing else: a gRPC server has no path, and without a port
    // the client would try 80/443, not Triton's 8001.
    let authority = r.url.strip_prefix("http://").or_else(|| r.url.strip_prefix("https://")).unwrap_or("");
    let authority = authority.strip_suffix('/').unwrap_or(authority);
    let valid = authority.rsplit_once(':').is_some_and(|(host, port)| {
        !host.is_empty() && !host.contains(['/', ' ', '@', '?', '#']) && port.parse::<u16>().is_ok_and(|p| p > 0)
    });
    if !valid {
        return Err(err(
            &key("url"),
            &r.url,
            "http://host:port or https://host:port (Triton's gRPC port, 8001 by default), or empty to run on this robot",
        ));
    }
    if !https && (!r.tls_ca_file.is_empty() || !r.tls_domain.is_empty()) {
        return Err(err(&key("url"), &r.url, "an https:// url: tls_ca_file and tls_domain are set"));
    }
    if r.deadline_s > hard_timeout_s {
        return Err(err(&key("deadline_s"), r.deadline_s, "a deadline <= watchdog.hard_timeout_s"));
    }
    Ok(())
}

/// `watchdog.max_abs_action` judges the raw action, before the manifest's
/// clip: at or below the clip it would fail the policy on actions the model
/// is documented to produce, and the clip would never act.
pub fn check_action_range(config: &Config, clips: &[ActionClip]) -> Result<(), ConfigError> {
    let max_abs = config.watchdog.max_abs_action;
    for c in clips {
        if c.clip.iter().any(|v| max_abs <= *v as f64) {
            return Err(err(
                "watchdog.max_abs_action",
                max_abs,
                format!(
                    "a value above every action.clip {:?} of {}: the invalid-output check judges the action \
                     before that clip, so at or below it the clip never acts",
                    c.clip, c.manifest
                ),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_watchdog_bound_must_be_above_every_clip() {
        let clips = [ActionClip { manifest: "models/hybrid.json".into(), clip: [1.15, 1.15, 1.15] }];
        let mut c = Config::default();
        assert_eq!(check_action_range(&c, &clips), Ok(()));
        c.watchdog.max_abs_action = 1.0;
        let e = check_action_range(&c, &clips).unwrap_err();
        assert_eq!(e.key, "watchdog.max_abs_action");
        assert!(e.allowed.contains("1.15") && e.allowed.contains("models/hybrid.json"), "{e}");
    }

    #[test]
    fn a_remote_server_needs_an_http_url_tls_only_with_https_and_a_deadline_within_the_hang_timeout() {
        let with = |f: &dyn Fn(&mut Config)| {
            let mut c = Config::default();
            f(&mut c);
            between(&c)
        };
        assert_eq!(with(&|_| {}), Ok(()), "off by default");
        assert_eq!(with(&|c| c.policy.hybrid.remote.url = "http://gpu:8001".into()), Ok(()));
        assert_eq!(with(&|c| c.policy.pure.remote.url = "https://gpu:8001".into()), Ok(()));
        assert_eq!(with(&|c| c.policy.hybrid.remote.url = "http://[::1]:8001/".into()), Ok(()));
        let bad_urls = ["gpu:8001", "grpc://gpu:8001", "http://", "http://:8001", "http://gpu", "http://gpu:x"];
        for bad in bad_urls.into_iter().chain(["http://gpu:8001/v2", "http://bad host:8001"]) {
            let e = with(&|c| c.policy.hybrid.remote.url = bad.into()).unwrap_err();
            assert_eq!(e.key, "policy.hybrid.remote.url", "{bad}");
            assert!(e.allowed.contains("http://host:port"), "{e}");
        }
        let e = with(&|c| {
            c.policy.pure.remote.url = "http://gpu:8001".into();
            c.policy.pure.remote.tls_ca_file = "ca.pem".into();
        })
        .unwrap_err();
        assert_eq!(e.key, "policy.pure.remote.url");
        let e = with(&|c| {
            c.policy.hybrid.remote.url = "http://gpu:8001".into();
            c.policy.hybrid.remote.deadline_s = 1.5;
        })
        .unwrap_err();
        assert_eq!(e.key, "policy.hybrid.remote.deadline_s");
        assert!(e.allowed.contains("watchdog.hard_timeout_s"), "{e}");
    }
}
