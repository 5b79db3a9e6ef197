//! Riding in the simulated city: the transit operator's validators along the first metro line
//! (devices of their own: they outlive the platform's restarts), riders' phones showing ride
//! codes, taps checked offline and uploaded when the day ends, then the fare run.

use citypay_directory::{Category, NewMerchant, Resident};
use citypay_ride::{Direction, Gate, Policy, RiderDevice, RiderKey, Validator};
use citypay_transit::{Transit, ValidatorInfo};

/// The most one rider's day of fares can come to (the Tianjin-like feed's daily cap is lower).
pub(crate) const FARES_DAY_MAX: i64 = 10_000;

/// A validator at a metro gate.
pub(crate) struct Gatekeeper {
    pub(crate) info: ValidatorInfo,
    pub(crate) device: Validator,
}

/// The operator and its gates, along one line, in stop order.
pub(crate) struct Network {
    pub(crate) gates: Vec<Gatekeeper>,
}

/// A 32-byte seed for a key, drawn from the run's seed and what the key is for.
pub(crate) fn key_seed(seed: u64, purpose: u64, index: u64) -> [u8; 32] {
    let mut bytes = [0u8; 32];
    for (part, chunk) in (0u64..).zip(bytes.chunks_mut(8)) {
        let word = xxhash_rust::xxh3::xxh3_64(&[seed.to_le_bytes(), purpose.to_le_bytes(), index.to_le_bytes(), part.to_le_bytes()].concat());
        chunk.copy_from_slice(&word.to_le_bytes());
    }
    bytes
}

/// Onboards the operator and registers a validator at each of the first metro line's first
/// four stations.
pub(crate) async fn build(transit: &Transit, directory: &citypay_directory::Directory, seed: u64, city: u32) -> Result<Network, String> {
    let preset = &citypay_sim::PRESETS[0];
    let shop = citypay_sim::people::new_merchant(preset, 0, citypay_sim::people::BusinessKind::Shop, 999_999);
    let operator = NewMerchant {
        name: "地铁集团".into(),
        mcc: "4111".into(),
        category: Category::Transit,
        uscc: citypay_sim::people::transit_uscc(preset, 0),
        city,
        ..shop
    };
    let operator = directory.onboard_merchant(&operator).await.map_err(|e| format!("the transit operator: {e}"))?.0.id;
    let (route, _, _) = transit.feed().routes().find(|(_, _, gated)| *gated).ok_or("the feed has no metro line")?;
    let route = route.to_owned();
    let stops: Vec<String> = transit.feed().route_stops(&route).iter().take(4).cloned().collect();
    let mut gates = Vec::new();
    for (index, stop) in (0u64..).zip(&stops) {
        let key = RiderKey::from_seed(key_seed(seed, 1, index));
        let info = transit.register_validator(operator, &route, stop, key.public_bytes()).await.map_err(|e| format!("a validator: {e}"))?;
        let policy = Policy { fare_estimate_fen: transit.fare_estimate(&route, stop), ..Policy::default() };
        gates.push(Gatekeeper { info, device: Validator::new(transit.keyring(), policy) });
    }
    Ok(Network { gates })
}

/// A rider's phone: its key from the seed and a credential issued for it.
pub(crate) async fn enrol(transit: &Transit, resident: &Resident, seed: u64, index: u64) -> Result<RiderDevice, String> {
    let key = RiderKey::from_seed(key_seed(seed, 2, index));
    let credential = transit.issue_credential(resident, key.public_bytes()).await.map_err(|e| format!("a ride credential: {e}"))?;
    Ok(RiderDevice::new(key, credential))
}

impl Network {
    /// A trip from gate `from` to gate `to`: in at `t`, out two minutes later, each gate
    /// checking the phone's fresh code offline. Whether both taps were taken.
    pub(crate) fn ride(&mut self, phone: &mut RiderDevice, from: usize, to: usize, t: u32) -> bool {
        let mut tap = |gate: usize, t: u32, direction: Direction| {
            let code = phone.next_code(t).encode();
            let keeper = &mut self.gates[gate];
            let at = Gate { validator_id: keeper.info.id, stop_or_route: 0, direction };
            keeper.device.validate(&code, t, at).is_ok()
        };
        tap(from, t, Direction::In) && tap(to, t + 120, Direction::Out)
    }
}
