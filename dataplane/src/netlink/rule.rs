//! Policy routing rules keyed by input interface: how overlay networks are kept apart on a node.

use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL};
use netlink_packet_route::route::RouteProtocol;
use netlink_packet_route::rule::{RuleAction as NlAction, RuleAttribute, RuleMessage};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};

use super::route::SHOAL_PROTO;
use super::{Netlink, NetlinkError};

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Rule {
    pub priority: u32,
    pub iif: String,
    pub action: RuleAction,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RuleAction {
    Lookup(u32),
}

impl Netlink {
    pub fn shoal_rules(&mut self) -> Result<Vec<Rule>, NetlinkError> {
        let mut req = RuleMessage::default();
        req.header.family = AddressFamily::Inet;
        let msgs = self.dump(RouteNetlinkMessage::GetRule(req), "list rules")?;
        let mut out = Vec::new();
        for m in msgs {
            let RouteNetlinkMessage::NewRule(r) = m else { continue };
            let mut priority = 0;
            let mut iif = None;
            let mut table = r.header.table as u32;
            let mut ours = false;
            for a in &r.attributes {
                match a {
                    RuleAttribute::Priority(p) => priority = *p,
                    RuleAttribute::Iifname(n) => iif = Some(n.clone()),
                    RuleAttribute::Table(t) => table = *t,
                    RuleAttribute::Protocol(p) => ours = *p == RouteProtocol::Other(SHOAL_PROTO),
                    _ => {}
                }
            }
            if let (true, Some(iif), NlAction::ToTable) = (ours, iif, r.header.action) {
                out.push(Rule { priority, iif, action: RuleAction::Lookup(table) });
            }
        }
        Ok(out)
    }

    pub fn add_rule(&mut self, rule: &Rule) -> Result<(), NetlinkError> {
        self.request(RouteNetlinkMessage::NewRule(rule_message(rule)), NLM_F_CREATE | NLM_F_EXCL, || {
            format!("add rule {} iif {} {:?}", rule.priority, rule.iif, rule.action)
        })
    }

    pub fn delete_rule(&mut self, rule: &Rule) -> Result<(), NetlinkError> {
        self.request(RouteNetlinkMessage::DelRule(rule_message(rule)), 0, || format!("delete rule {} iif {}", rule.priority, rule.iif))
    }
}

fn rule_message(rule: &Rule) -> RuleMessage {
    let mut msg = RuleMessage::default();
    msg.header.family = AddressFamily::Inet;
    let RuleAction::Lookup(table) = rule.action;
    msg.header.action = NlAction::ToTable;
    msg.header.table = if table < 256 { table as u8 } else { 252 };
    msg.attributes.push(RuleAttribute::Table(table));
    msg.attributes.push(RuleAttribute::Priority(rule.priority));
    msg.attributes.push(RuleAttribute::Iifname(rule.iif.clone()));
    msg.attributes.push(RuleAttribute::Protocol(RouteProtocol::Other(SHOAL_PROTO)));
    msg
}
