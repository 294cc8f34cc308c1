//! Gossip timing and sizes, checked, and turned into foca's `Config`.
//!
//! What foca 2.0 gives: the SWIM probe cycle (direct ping, `num_indirect_probes` ping-reqs after
//! `probe_rtt`, suspect at the end of `probe_period`), suspicion that turns Down after a fixed
//! `suspect_to_down_after` unless refuted, piggybacked updates sent `max_transmissions` times,
//! periodic gossip and announces (to discover members, and to members it holds down so a
//! partition heals), and auto-rejoin through `Identity::renew`. What it lacks of Lifeguard we
//! add in `core` by steering the timers foca asks for: local health awareness (`health.rs`)
//! and suspicion timeouts that shrink with independent confirmations (`suspicion.rs`).

use super::error::GossipError;
use super::seal::OVERHEAD;
use std::num::{NonZeroU8, NonZeroUsize};
use std::time::Duration;

#[derive(Clone, Debug, PartialEq)]
pub struct GossipConfig {
    /// How often this node probes one member.
    pub probe_period: Duration,
    /// How long a direct probe waits for its ack before asking others (ping-req).
    pub probe_rtt: Duration,
    pub indirect_probes: usize,
    /// Extra dissemination: every `gossip_period`, send pending updates to `gossip_fanout` members.
    pub gossip_period: Duration,
    pub gossip_fanout: usize,
    /// A suspicion nobody else confirms lasts `suspicion_max`; each independent accuser shortens
    /// it, down to `suspicion_min` after `suspicion_confirmations` of them (Lifeguard).
    pub suspicion_min: Duration,
    pub suspicion_max: Duration,
    pub suspicion_confirmations: u32,
    /// Rounds of last checks sent to a suspect before a suspicion too few others confirmed
    /// becomes final (0: none). See `Suspicions::begin_check` for why.
    pub last_checks: u8,
    /// Local health awareness: probe timers stretch up to `1 + max_health` times while this
    /// node's own probes keep failing (Lifeguard's LHM, memberlist's AwarenessMaxMultiplier).
    pub max_health: u32,
    /// The cluster size this is tuned for: updates are retransmitted 4 x log10(size + 1) times.
    pub expected_size: u32,
    /// Largest sealed datagram, envelope included.
    pub max_datagram: usize,
    /// How long a down member is remembered (its address cannot rejoin with the same identity).
    pub remove_down_after: Duration,
    pub announce_period: Duration,
    pub announce_down_period: Duration,
}

impl GossipConfig {
    /// shoal's defaults for a LAN: detection well under memberlist's LAN defaults (probe 1 s,
    /// suspicion 4 x log10(n) s, 6x max) at the cost of more probe traffic; see the gossip
    /// bench for what they measure at 1,000 members with 5% loss. Probing every 300 ms and
    /// gossiping every 100 ms (rather than 500 and 200) brought detection p99 there from
    /// 3.4-3.8 s to 2.1 s: the wait for the first probe of a dead member and for the
    /// confirmations that shorten its suspicion shrink with the probe period, and the spread of
    /// its DOWN with the gossip period. A LAN answers a probe in well under 150 ms.
    pub fn lan(expected_size: u32) -> GossipConfig {
        GossipConfig {
            probe_period: Duration::from_millis(300),
            probe_rtt: Duration::from_millis(150),
            indirect_probes: 3,
            gossip_period: Duration::from_millis(100),
            gossip_fanout: 3,
            suspicion_min: Duration::from_millis(500),
            suspicion_max: Duration::from_secs(5),
            suspicion_confirmations: 3,
            last_checks: 2,
            max_health: 8,
            expected_size: expected_size.max(1),
            max_datagram: 1400,
            remove_down_after: Duration::from_secs(24 * 3600),
            announce_period: Duration::from_secs(30),
            announce_down_period: Duration::from_secs(15),
        }
    }

    /// memberlist's DefaultLANConfig in these terms (for comparison in the bench).
    pub fn memberlist_lan(expected_size: u32) -> GossipConfig {
        let n = f64::from(expected_size.max(10));
        let min = Duration::from_secs_f64(4.0 * n.log10());
        GossipConfig {
            probe_period: Duration::from_secs(1),
            probe_rtt: Duration::from_millis(500),
            gossip_period: Duration::from_millis(200),
            gossip_fanout: 3,
            suspicion_min: min,
            suspicion_max: min * 6,
            suspicion_confirmations: 2,
            last_checks: 0,
            ..GossipConfig::lan(expected_size)
        }
    }

    pub fn validate(&self) -> Result<(), GossipError> {
        let bad = |field, problem: &str| Err(GossipError::Config { field, problem: problem.to_string() });
        if self.probe_period.is_zero() || self.probe_rtt.is_zero() {
            return bad("probe_period/probe_rtt", "must be above zero");
        }
        if self.probe_rtt >= self.probe_period {
            return bad("probe_rtt", "must be shorter than probe_period (the indirect probes need the rest of the period)");
        }
        if self.indirect_probes == 0 || self.gossip_fanout == 0 {
            return bad("indirect_probes/gossip_fanout", "must be at least 1");
        }
        if self.gossip_period.is_zero() || self.announce_period.is_zero() || self.announce_down_period.is_zero() {
            return bad("gossip_period/announce_period/announce_down_period", "must be above zero");
        }
        if self.suspicion_min.is_zero() || self.suspicion_min > self.suspicion_max {
            return bad("suspicion_min", "must be above zero and at most suspicion_max");
        }
        if self.last_checks > 5 {
            return bad("last_checks", "must be at most 5 (each round delays the verdict by one probe_rtt)");
        }
        if self.max_health > 64 {
            return bad("max_health", "must be at most 64 (probe timers would stretch past any useful bound)");
        }
        if !(512..=65_507).contains(&self.max_datagram) {
            return bad("max_datagram", "must be between 512 and 65507 bytes (1400 keeps a datagram in one Ethernet frame)");
        }
        if self.remove_down_after < self.suspicion_max {
            return bad("remove_down_after", "must be at least suspicion_max");
        }
        Ok(())
    }

    pub(crate) fn max_transmissions(&self) -> u8 {
        (4.0 * f64::from(self.expected_size.saturating_add(1)).log10()).ceil().clamp(1.0, 255.0) as u8
    }

    pub(crate) fn to_foca(&self) -> Result<foca::Config, GossipError> {
        self.validate()?;
        let nz = |n: usize| NonZeroUsize::new(n).expect("validated above zero");
        Ok(foca::Config {
            probe_period: self.probe_period,
            probe_rtt: self.probe_rtt,
            num_indirect_probes: nz(self.indirect_probes),
            max_transmissions: NonZeroU8::new(self.max_transmissions()).expect("clamped to 1..=255"),
            // The core holds this timer itself and fires it on the Lifeguard schedule.
            suspect_to_down_after: self.suspicion_max,
            remove_down_after: Some(self.remove_down_after),
            max_packet_size: nz(self.max_datagram - OVERHEAD),
            notify_down_members: true,
            periodic_announce: Some(foca::PeriodicParams { frequency: self.announce_period, num_members: nz(1) }),
            periodic_announce_to_down_members: Some(foca::PeriodicParams { frequency: self.announce_down_period, num_members: nz(2) }),
            periodic_gossip: Some(foca::PeriodicParams { frequency: self.gossip_period, num_members: nz(self.gossip_fanout) }),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_bad_values_name_the_field() {
        GossipConfig::lan(1000).to_foca().unwrap();
        GossipConfig::memberlist_lan(1000).to_foca().unwrap();
        assert_eq!(GossipConfig::lan(1000).max_transmissions(), 13);
        let mut c = GossipConfig::lan(3);
        c.probe_rtt = c.probe_period;
        assert!(c.validate().unwrap_err().to_string().contains("probe_rtt"));
        let mut c = GossipConfig::lan(3);
        c.max_datagram = 100;
        assert!(c.validate().unwrap_err().to_string().contains("max_datagram"));
        let mut c = GossipConfig::lan(3);
        c.suspicion_min = c.suspicion_max * 2;
        assert!(c.validate().unwrap_err().to_string().contains("suspicion_min"));
    }
}
