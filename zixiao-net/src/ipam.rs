//! [`StoreIpam`]: IP address management kept in the [`Store`].
//!
//! Each allocated address is a key `/zixiao/ipam/<network>/addresses/<ip>`
//! holding its owner, and each owner has a key
//! `/zixiao/ipam/<network>/owners/<owner>` listing its addresses. An
//! allocation writes all of them in one transaction, every key with
//! [`Precondition::Absent`], so two controllers racing for one address (or
//! one owner allocating twice) cannot both win: the loser re-reads and picks
//! again. Release deletes the same keys in one transaction.
//!
//! On a SLAAC subnet (an IPv6 /64, see [`Subnet::is_slaac`]) nothing is
//! chosen: the owner's address is the one its NIC forms itself from the
//! router advertisements, the EUI-64 address of the MAC the controller
//! gives it there ([`mac_octets`] of owner and network). Two MACs that
//! form one address (a 40-bit hash collision) are refused, naming the
//! holder, rather than handed out twice.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::Arc;

use async_trait::async_trait;
use zixiao_core::model::{from_u128, mac_octets, to_u128, IpConfig, Network, Subnet};
use zixiao_core::store::{Precondition, Store, StoreError, StoredObject, Txn};
use zixiao_core::{AddressAllocator, Error, Result};

/// Key prefix of every allocation.
pub const IPAM_PREFIX: &str = "/zixiao/ipam/";
/// Random probes tried before reading the whole pool: cheap while it is sparse.
const BLIND_PROBES: u64 = 3;
/// How often an allocation re-reads the pool after losing a race.
const MAX_ATTEMPTS: u64 = 10_000;

/// Address allocation over a [`Store`]; see the module docs.
///
/// ```no_run
/// # async fn example(store: std::sync::Arc<dyn zixiao_core::Store>) -> zixiao_core::Result<()> {
/// use zixiao_core::model::{CreateNetwork, InstallationId};
/// use zixiao_core::AddressAllocator;
/// use zixiao_net::StoreIpam;
///
/// let ipam = StoreIpam::new(store);
/// let here = InstallationId::generate();
/// let lan = CreateNetwork::new("lan", ["10.8.0.0/24"]).validate(&here, chrono::Utc::now())?;
/// let addresses = ipam.allocate(&lan, "instance-1").await?;
/// assert_eq!(addresses[0].prefix_len, 24);
/// ipam.release("lan", "instance-1").await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct StoreIpam {
    store: Arc<dyn Store>,
}

impl StoreIpam {
    /// Allocations kept in `store`.
    pub fn new(store: Arc<dyn Store>) -> Self {
        StoreIpam { store }
    }

    /// Every address allocated on `network`, with its owner, in key order.
    pub async fn allocations(&self, network: &str) -> Result<Vec<(IpAddr, String)>> {
        let listing = self.store.list(&addresses_prefix(network)).await?;
        let mut out = Vec::with_capacity(listing.items.len());
        for kv in listing.items {
            let text = &kv.key[addresses_prefix(network).len()..];
            let address: IpAddr = text.parse().map_err(|_| corrupt(&kv.key))?;
            out.push((address, String::from_utf8_lossy(&kv.value).into_owned()));
        }
        Ok(out)
    }

    /// The refusal of `owner`'s SLAAC `address` on `subnet`, held by
    /// another owner (named when it can be read): its MAC forms the same
    /// address as the holder's.
    async fn slaac_taken(
        &self,
        network: &Network,
        subnet: &Subnet,
        owner: &str,
        address: IpAddr,
    ) -> Error {
        let holder = match self.store.get(&address_key(&network.name, address)).await {
            Ok(Some(kv)) => format!("`{}`", String::from_utf8_lossy(&kv.value)),
            _ => "another instance".to_owned(),
        };
        Error::Conflict(format!(
            "the SLAAC address {address} of `{owner}` on network `{}` ({}) is held by {holder}: \
             their MACs form the same address; create the instance again for another MAC",
            network.name, subnet.cidr
        ))
    }

    async fn recorded(&self, network: &str, owner: &str) -> Result<Option<Vec<IpConfig>>> {
        match self.store.get(&owner_key(network, owner)).await? {
            Some(kv) => serde_json::from_slice(&kv.value)
                .map(Some)
                .map_err(|_| corrupt(&kv.key)),
            None => Ok(None),
        }
    }
}

fn addresses_prefix(network: &str) -> String {
    format!("{IPAM_PREFIX}{network}/addresses/")
}

fn address_key(network: &str, address: IpAddr) -> String {
    format!("{}{address}", addresses_prefix(network))
}

fn owners_prefix(network: &str) -> String {
    format!("{IPAM_PREFIX}{network}/owners/")
}

fn owner_key(network: &str, owner: &str) -> String {
    format!("{}{owner}", owners_prefix(network))
}

/// The error for an allocation on a network that is being deleted, is
/// gone, or was never stored.
fn changed(name: &str) -> Error {
    Error::FailedPrecondition(format!(
        "network `{name}` is being deleted or does not exist (allocations need the stored network)"
    ))
}

fn corrupt(key: &str) -> Error {
    Error::Internal(format!("the allocation at `{key}` cannot be decoded"))
}

/// A stable spread of probe positions: FNV-1a over the owner and the attempt.
fn probe(owner: &str, attempt: u64) -> u128 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in owner.bytes().chain(attempt.to_le_bytes()) {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    u128::from(hash)
}

/// The first assignable address of `subnet` at or after offset `start`
/// (wrapping around), skipping `taken`; `None` when the pool is full.
fn next_free(subnet: &Subnet, taken: &BTreeSet<u128>, start: u128) -> Option<u128> {
    let first = subnet.cidr.first();
    let last = subnet.cidr.last();
    let span = last - first;
    let ipv4 = subnet.cidr.is_ipv4();
    let mut candidate = first + start % span.saturating_add(1).max(1);
    // Each step passes one taken address, one reserved range or one of the
    // few special addresses, so the walk is bounded even for a /64.
    let mut wrapped = false;
    let bound = taken.len() + subnet.reserved.len() * 2 + 8;
    for _ in 0..=bound {
        let address = from_u128(candidate, ipv4);
        if subnet.is_assignable(address) && !taken.contains(&candidate) {
            return Some(candidate);
        }
        let skip_to = subnet
            .reserved
            .iter()
            .find(|r| r.contains(address))
            .map(|r| r.last())
            .unwrap_or(candidate);
        if skip_to >= last {
            if wrapped {
                return None;
            }
            wrapped = true;
            candidate = first;
        } else {
            candidate = skip_to + 1;
        }
    }
    None
}

#[async_trait]
impl AddressAllocator for StoreIpam {
    async fn allocate(&self, network: &Network, owner: &str) -> Result<Vec<IpConfig>> {
        if owner.is_empty() || owner.contains('/') {
            return Err(Error::invalid("owner", "must be non-empty without `/`"));
        }
        let name = &network.name;
        if network.deleting || network.revision == 0 {
            return Err(changed(name));
        }
        for attempt in 0..MAX_ATTEMPTS {
            if let Some(done) = self.recorded(name, owner).await? {
                return Ok(done);
            }
            // Sparse pools: a few blind probes, no read of the pool; then
            // read what is taken and walk to a free address.
            let taken: BTreeSet<u128> = if attempt < BLIND_PROBES {
                BTreeSet::new()
            } else {
                self.allocations(name)
                    .await?
                    .into_iter()
                    .map(|(a, _)| to_u128(a))
                    .collect()
            };
            let mut chosen = Vec::new();
            for subnet in &network.subnets {
                if let Some(address) = subnet.slaac_address(mac_octets(owner, name)) {
                    if taken.contains(&to_u128(address)) {
                        return Err(self.slaac_taken(network, subnet, owner, address).await);
                    }
                    chosen.push(IpConfig {
                        address,
                        prefix_len: subnet.cidr.prefix_len(),
                        gateway: subnet.gateway,
                    });
                    continue;
                }
                let start = probe(owner, attempt);
                let Some(n) = next_free(subnet, &taken, start) else {
                    return Err(Error::ResourceExhausted(format!(
                        "address pool {} of network `{name}` is exhausted: every assignable address is in use",
                        subnet.cidr
                    )));
                };
                chosen.push(IpConfig {
                    address: from_u128(n, subnet.cidr.is_ipv4()),
                    prefix_len: subnet.cidr.prefix_len(),
                    gateway: subnet.gateway,
                });
            }
            let record = serde_json::to_vec(&chosen)
                .map_err(|e| Error::Internal(format!("encoding an allocation: {e}")))?;
            // Only while the network is as read: a delete marks it first,
            // so an allocation cannot slip in behind the delete's check.
            let mut txn = Txn::new()
                .check(
                    Network::key_for(name),
                    Precondition::Revision(network.revision),
                )
                .put(owner_key(name, owner), record, Precondition::Absent);
            for c in &chosen {
                txn = txn.put(
                    address_key(name, c.address),
                    owner.as_bytes().to_vec(),
                    Precondition::Absent,
                );
            }
            match self.store.commit(txn).await {
                Ok(_) => return Ok(chosen),
                // Someone took one of the addresses (or allocated for this
                // owner) first: look again.
                Err(StoreError::Conflict { key, .. } | StoreError::NotFound(key))
                    if key == Network::key_for(name) =>
                {
                    return Err(changed(name));
                }
                Err(StoreError::AlreadyExists(_) | StoreError::Conflict { .. }) => {
                    tokio::task::yield_now().await;
                }
                Err(other) => return Err(other.into()),
            }
        }
        Err(Error::Conflict(format!(
            "allocating on network `{name}` kept losing to concurrent allocations"
        )))
    }

    async fn release(&self, network: &str, owner: &str) -> Result<()> {
        for _ in 0..MAX_ATTEMPTS {
            let Some(kv) = self.store.get(&owner_key(network, owner)).await? else {
                return Ok(());
            };
            let held: Vec<IpConfig> =
                serde_json::from_slice(&kv.value).map_err(|_| corrupt(&kv.key))?;
            let mut txn = Txn::new().delete(&kv.key, Precondition::Revision(kv.mod_revision));
            for c in held {
                txn = txn.delete(address_key(network, c.address), Precondition::None);
            }
            match self.store.commit(txn).await {
                Ok(_) => return Ok(()),
                // A concurrent release won: the next read finds nothing.
                Err(StoreError::Conflict { .. } | StoreError::NotFound(_)) => {}
                Err(other) => return Err(other.into()),
            }
        }
        Err(Error::Conflict(format!(
            "releasing `{owner}` on network `{network}` kept conflicting"
        )))
    }

    async fn guard(&self, txn: Txn, network: &str, owner: &str) -> Result<Txn> {
        let key = owner_key(network, owner);
        let Some(kv) = self.store.get(&key).await? else {
            return Err(Error::Conflict(format!(
                "the addresses of `{owner}` on network `{network}` were released"
            )));
        };
        Ok(txn.check(key, Precondition::Revision(kv.mod_revision)))
    }

    async fn owners(&self, network: &str) -> Result<Vec<String>> {
        let prefix = owners_prefix(network);
        let listing = self.store.list(&prefix).await?;
        Ok(listing
            .items
            .into_iter()
            .map(|kv| kv.key[prefix.len()..].to_owned())
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use zixiao_core::model::{CreateNetwork, InstallationId};

    fn subnet(cidr: &str, reserved: &[&str]) -> Subnet {
        let mut req = CreateNetwork::new("n", [cidr]);
        req.reserved = reserved.iter().map(|r| r.to_string()).collect();
        req.validate(&InstallationId::generate(), chrono::Utc::now())
            .unwrap()
            .subnets
            .remove(0)
    }

    #[test]
    fn next_free_skips_special_taken_and_reserved_and_wraps() {
        let s = subnet("10.0.0.0/29", &["10.0.0.4/31"]);
        let base = s.cidr.first();
        let taken: BTreeSet<u128> = [base + 2].into();
        // From the start: .0 network, .1 gateway, .2 taken, .3 free.
        assert_eq!(next_free(&s, &taken, 0), Some(base + 3));
        // From .4 (reserved .4-.5): .6; from .7 (broadcast): wraps to .3.
        assert_eq!(next_free(&s, &taken, 4), Some(base + 6));
        assert_eq!(next_free(&s, &taken, 7), Some(base + 3));
        let full: BTreeSet<u128> = [base + 2, base + 3, base + 6].into();
        assert_eq!(next_free(&s, &full, 5), None);
    }

    #[test]
    fn next_free_handles_a_large_ipv6_pool() {
        // Off SLAAC (not a /64): addresses are walked to, as for IPv4.
        let s = subnet("fd00::/63", &["fd00::/72"]);
        let n = next_free(&s, &BTreeSet::new(), 0).unwrap();
        assert!(s.is_assignable(from_u128(n, false)));
        assert_eq!(n, s.cidr.first() + (1u128 << 56));
    }
}
