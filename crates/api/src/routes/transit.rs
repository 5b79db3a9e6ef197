//! Transit over HTTP: riders get ride credentials and pay arrears, transit operators register
//! validators and see their revenue, validator devices upload taps and download the deny list
//! (authenticated by their own keys), platform operators run the fares of a closed day.
//!
//! A validator signs each call with its device key: `Authorization: Validator
//! <id>:<unix seconds>:<signature hex>`, the signature over `"<METHOD> <path>\n<unix
//! seconds>\n<body>"` (see `citypay_ride::DeviceKey::sign`), within five minutes of the
//! platform's clock. A replayed upload is harmless: uploads are idempotent per (validator,
//! sequence).

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::Response;
use citypay_api_types::{ErrorBody, Money};
use citypay_directory::{Role, hex};
use citypay_transit::TransitError;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::AppState;
use super::residents::money;
use super::auth::{Caller, MerchantCaller, OperatorCaller, ResidentCaller};
use super::replay::once;
use crate::{ApiError, AppJson, Idempotent, IdempotencyKey};

const CLOCK_SKEW_S: u64 = citypay_transit::CLOCK_SKEW_S;

fn unhex<const N: usize>(text: &str, field: &'static str) -> Result<[u8; N], ApiError> {
    hex::decode(text).ok_or_else(|| ApiError::bad_request("invalid_field", format!("{field}: {} hex digits", 2 * N)))
}

/// A rider device's public key.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CredentialRequest {
    /// Ed25519 public key of the rider's device, 64 hex digits.
    rider_key: String,
}

/// A platform-signed ride credential.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct CredentialView {
    /// The encoded credential (118 bytes, hex): the device puts it in every ride code.
    credential: String,
    /// The opaque account reference in it.
    account_ref: String,
    /// Unix seconds after which validators refuse it.
    valid_until: u32,
    /// The deferred-debit ceiling.
    ceiling: Money,
}

/// Issues a ride credential for the caller's device key (refused while fares are owed).
#[utoipa::path(post, path = "/v1/ride-credentials", security(("resident" = [])), tag = "transit", params(IdempotencyKey), request_body = CredentialRequest,
    responses((status = CREATED, body = CredentialView), (status = CONFLICT, body = ErrorBody)))]
pub(crate) async fn issue_credential(
    State(state): State<AppState>,
    ResidentCaller(me): ResidentCaller,
    request: Idempotent<CredentialRequest>,
) -> Result<Response, ApiError> {
    let caller = Caller::Resident(me.id);
    once(&state, &caller, &request.key, request.fingerprint, StatusCode::CREATED, async {
        let key = unhex::<32>(&request.body.rider_key, "rider_key")?;
        let credential = state.transit.issue_credential(&me, key).await?;
        Ok(CredentialView {
            credential: hex::encode(&credential.to_bytes()),
            account_ref: credential.terms.account_ref.to_string(),
            valid_until: credential.terms.valid_until,
            ceiling: money(i64::from(credential.terms.ceiling_fen)),
        })
    })
    .await
}

/// Arrears paid.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct ArrearsPaid {
    /// What was paid from the wallet.
    paid: Money,
}

/// Pays every fare the caller owes from their wallet, which lifts the deny list.
#[utoipa::path(post, path = "/v1/transit/arrears-payments", security(("resident" = [])), tag = "transit", params(IdempotencyKey),
    responses((status = OK, body = ArrearsPaid), (status = UNPROCESSABLE_ENTITY, body = ErrorBody)))]
pub(crate) async fn pay_arrears(State(state): State<AppState>, ResidentCaller(me): ResidentCaller, key: IdempotencyKey) -> Result<Response, ApiError> {
    let caller = Caller::Resident(me.id);
    // No body: the fingerprint is the route's.
    let fingerprint = crate::request_fingerprint(&Method::POST, "/v1/transit/arrears-payments", b"");
    once(&state, &caller, &key, fingerprint, StatusCode::OK, async {
        let paid = state.transit.pay_arrears(&me).await?;
        Ok(ArrearsPaid { paid: money(paid) })
    })
    .await
}

/// A validator to register.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ValidatorRequest {
    /// Route of the fare feed (bus line, metro line).
    route_id: String,
    /// Stop of that route (metro station; a bus's first stop).
    stop_id: String,
    /// The device's Ed25519 public key, 64 hex digits.
    device_key: String,
}

/// A registered validator.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct ValidatorView {
    /// What its taps carry and its calls name.
    validator_id: u32,
    /// Route.
    route_id: String,
    /// Stop.
    stop_id: String,
    /// The most an entry here can cost: the device counts it against each credential's
    /// ceiling (its `Policy::fare_estimate_fen`).
    fare_estimate: Money,
}

/// Registers a validator of the calling transit operator (a device key names one validator).
#[utoipa::path(post, path = "/v1/validators", security(("merchant" = [])), tag = "transit", params(IdempotencyKey), request_body = ValidatorRequest,
    responses((status = CREATED, body = ValidatorView), (status = FORBIDDEN, body = ErrorBody), (status = CONFLICT, body = ErrorBody)))]
pub(crate) async fn register_validator(
    State(state): State<AppState>,
    MerchantCaller(merchant): MerchantCaller,
    request: Idempotent<ValidatorRequest>,
) -> Result<Response, ApiError> {
    let caller = Caller::Merchant(merchant);
    once(&state, &caller, &request.key, request.fingerprint, StatusCode::CREATED, async {
        let key = unhex::<32>(&request.body.device_key, "device_key")?;
        let v = state.transit.register_validator(merchant, &request.body.route_id, &request.body.stop_id, key).await?;
        let fare_estimate = money(i64::from(state.transit.fare_estimate(&v.route_id, &v.stop_id)));
        Ok(ValidatorView { validator_id: v.id, route_id: v.route_id, stop_id: v.stop_id, fare_estimate })
    })
    .await
}

/// Checks a validator's signed call; answers the validator.
async fn authenticate_device(
    state: &AppState,
    headers: &HeaderMap,
    method: &Method,
    path: &str,
    id: u32,
    body: &[u8],
) -> Result<citypay_transit::ValidatorInfo, ApiError> {
    let denied = || ApiError::unauthorized("expected Authorization: Validator <id>:<unix seconds>:<signature>");
    let value = headers.get("authorization").and_then(|v| v.to_str().ok()).ok_or_else(denied)?;
    let credentials = value.strip_prefix("Validator ").ok_or_else(denied)?;
    let mut parts = credentials.splitn(3, ':');
    let (Some(claimed), Some(time), Some(signature)) = (parts.next(), parts.next(), parts.next()) else { return Err(denied()) };
    let time: u64 = time.parse().map_err(|_| denied())?;
    if claimed != id.to_string() {
        return Err(ApiError::forbidden("a validator speaks only for itself"));
    }
    let now = state.directory.clock().now().unix_seconds();
    if time.abs_diff(now) > CLOCK_SKEW_S {
        return Err(ApiError::unauthorized("the signed time is more than five minutes off"));
    }
    let signature = unhex::<64>(signature, "signature").map_err(|_| denied())?;
    let (info, key) = state.transit.validator(id).await.map_err(|e| match e {
        TransitError::UnknownValidator => ApiError::unauthorized("unknown validator"),
        other => ApiError::from(other),
    })?;
    let mut message = format!("{method} {path}\n{time}\n").into_bytes();
    message.extend_from_slice(body);
    if !citypay_ride::verify_device_signature(&key, &message, &signature) {
        return Err(ApiError::unauthorized("the signature does not verify"));
    }
    Ok(info)
}

/// One tap as a validator recorded it.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct TapView {
    /// The device's sequence number.
    sequence: u64,
    /// The credential's account reference.
    account_ref: String,
    /// `in` or `out`.
    direction: String,
    /// Unix seconds, validator clock.
    time: u32,
    /// SHA-256 of the code, 64 hex digits.
    code_hash: String,
}

/// A batch of taps.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct TapUpload {
    /// The taps.
    taps: Vec<TapView>,
}

impl TapUpload {
    /// The taps of validator `id`, as the transit service takes them.
    pub(crate) fn taps(&self, id: u32) -> Result<Vec<citypay_ride::Tap>, ApiError> {
        self.taps
            .iter()
            .map(|t| {
                Ok(citypay_ride::Tap {
                    validator_id: id,
                    sequence: t.sequence,
                    stop_or_route: 0,
                    direction: match t.direction.as_str() {
                        "in" => citypay_ride::Direction::In,
                        "out" => citypay_ride::Direction::Out,
                        _ => return Err(ApiError::bad_request("invalid_field", "direction: in or out")),
                    },
                    time: t.time,
                    account_ref: t.account_ref.parse().map_err(|_| ApiError::bad_request("invalid_field", "account_ref: a number"))?,
                    code_hash: unhex::<32>(&t.code_hash, "code_hash")?,
                })
            })
            .collect()
    }
}

/// An uploaded tap that was refused: it cannot be true, and nothing of it was stored.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct RefusedTap {
    /// Its sequence number.
    sequence: u64,
    /// `sequence_conflict` (another tap was uploaded under this number),
    /// `dated_after_upload` (more than five minutes after the upload),
    /// `dated_before_registration` (before its validator was registered), or
    /// `unknown_rider` (no credential was ever issued for its account reference).
    code: String,
    /// What is wrong.
    message: String,
}

/// What an upload did, tap by tap: every tap is stored, already there, or refused.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct UploadView {
    /// New taps.
    stored: u64,
    /// Taps uploaded before, exactly as now.
    already: u64,
    /// Taps refused; the batch's other taps are kept.
    refused: Vec<RefusedTap>,
}

/// Uploads a validator's taps (signed by the device; idempotent per sequence number). Each
/// tap is answered on its own: a tap that cannot be true is refused and the others are kept.
#[utoipa::path(post, path = "/v1/validators/{id}/taps", security(("validator" = [])), tag = "transit", request_body = TapUpload,
    params(("id" = u32, Path, description = "The validator")),
    responses((status = OK, body = UploadView), (status = UNAUTHORIZED, body = ErrorBody), (status = FORBIDDEN, body = ErrorBody)))]
pub(crate) async fn upload_taps(
    State(state): State<AppState>,
    Path(id): Path<u32>,
    request: axum::extract::Request,
) -> Result<AppJson<UploadView>, ApiError> {
    let (method, headers) = (request.method().clone(), request.headers().clone());
    // The framework's body handling: JSON content type, the size limit, errors that never
    // quote the values sent. The signature covers the bytes exactly as received.
    let body = crate::json::json_body_bytes(request, &state).await?;
    let info = authenticate_device(&state, &headers, &method, &format!("/v1/validators/{id}/taps"), id, &body).await?;
    let upload: TapUpload = crate::json::parse_json(&body)?;
    let taps = upload.taps(id)?;
    let report = state.transit.upload_taps(&info, &taps).await?;
    let refused = report
        .refused
        .iter()
        .map(|(sequence, refusal)| RefusedTap { sequence: *sequence, code: refusal.code().to_owned(), message: refusal.message().to_owned() })
        .collect();
    Ok(AppJson(UploadView { stored: report.stored, already: report.already, refused }))
}

/// Account references validators must refuse.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct DenyList {
    /// Riders in arrears.
    accounts: Vec<String>,
}

/// The deny list, for a validator (signed by the device, empty body).
#[utoipa::path(get, path = "/v1/validators/{id}/deny-list", security(("validator" = [])), tag = "transit",
    params(("id" = u32, Path, description = "The validator")),
    responses((status = OK, body = DenyList), (status = UNAUTHORIZED, body = ErrorBody), (status = FORBIDDEN, body = ErrorBody)))]
pub(crate) async fn deny_list(State(state): State<AppState>, Path(id): Path<u32>, method: Method, headers: HeaderMap) -> Result<AppJson<DenyList>, ApiError> {
    authenticate_device(&state, &headers, &method, &format!("/v1/validators/{id}/deny-list"), id, b"").await?;
    let accounts = state.transit.deny_list().await?.iter().map(ToString::to_string).collect();
    Ok(AppJson(DenyList { accounts }))
}

/// A platform public key, for validators to check credentials offline.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct RideKeyView {
    key_id: u16,
    /// Ed25519 public key, 64 hex digits.
    public_key: String,
    /// Unix seconds: credentials issued from then on may carry it...
    not_before: u32,
    /// ...until then.
    not_after: u32,
}

/// The platform keys that sign ride credentials, and the revocation list.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct RideKeys {
    keys: Vec<RideKeyView>,
    /// Key ids to refuse, whatever their validity.
    revoked: Vec<u16>,
}

/// The platform's credential-signing public keys and the revoked key ids, for a validator
/// (signed by the device).
#[utoipa::path(get, path = "/v1/validators/{id}/ride-keys", security(("validator" = [])), tag = "transit",
    params(("id" = u32, Path, description = "The validator")),
    responses((status = OK, body = RideKeys), (status = UNAUTHORIZED, body = ErrorBody), (status = FORBIDDEN, body = ErrorBody)))]
pub(crate) async fn ride_keys(State(state): State<AppState>, Path(id): Path<u32>, method: Method, headers: HeaderMap) -> Result<AppJson<RideKeys>, ApiError> {
    authenticate_device(&state, &headers, &method, &format!("/v1/validators/{id}/ride-keys"), id, b"").await?;
    let keys = state
        .transit
        .platform_public_keys()
        .iter()
        .map(|key| RideKeyView {
            key_id: key.key_id(),
            public_key: hex::encode(&key.to_bytes()),
            not_before: key.validity().not_before,
            not_after: key.validity().not_after,
        })
        .collect();
    Ok(AppJson(RideKeys { keys, revoked: state.transit.revoked_keys() }))
}

/// A day to fare.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct FareRunRequest {
    /// The service day, `YYYY-MM-DD` (it runs from 04:00 to 04:00).
    date: String,
}

/// What a fare run did.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct FareRunView {
    riders: u64,
    trips: u64,
    charged: Money,
    riders_in_arrears: u64,
    arrears: Money,
    unchanged: u64,
    duplicate_codes: u64,
}

/// A service day's number (its local date's).
fn service_day(date: &str) -> Result<i64, ApiError> {
    super::bills::date(date).map(citypay_ledger::LocalDate::day_number)
}

/// Fares a closed service day (platform operators). Re-running it moves only what changed.
#[utoipa::path(post, path = "/v1/transit/fare-runs", security(("operator" = [])), tag = "transit", params(IdempotencyKey), request_body = FareRunRequest,
    responses((status = OK, body = FareRunView), (status = CONFLICT, body = ErrorBody)))]
pub(crate) async fn fare_run(State(state): State<AppState>, operator: OperatorCaller, request: Idempotent<FareRunRequest>) -> Result<Response, ApiError> {
    if operator.role != Role::PlatformOperator {
        return Err(ApiError::forbidden("only platform operators run fares"));
    }
    let caller = Caller::Operator(operator.id);
    once(&state, &caller, &request.key, request.fingerprint, StatusCode::OK, async {
        let run = state.transit.fare_day(service_day(&request.body.date)?).await?;
        // Not kept for replay: a run again fares those riders (and moves nothing twice).
        if run.failed > 0 {
            return Err(ApiError::unavailable(format!("{} riders could not be fared; run the day again", run.failed), std::time::Duration::from_secs(60)));
        }
        Ok(FareRunView {
            riders: run.riders,
            trips: run.trips,
            charged: money(run.charged),
            riders_in_arrears: run.arrears,
            arrears: money(run.arrears_amount),
            unchanged: run.unchanged,
            duplicate_codes: run.duplicates,
        })
    })
    .await
}

/// A rotation of the city's ride key.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RotationRequest {
    /// How long the previous key keeps verifying, in hours (credentials live a day: 24 or more
    /// keeps every credential it signed good to its end).
    overlap_hours: u32,
}

/// One key of the city's ride-key schedule.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct ScheduledKeyView {
    key_id: u16,
    /// Ed25519 public key, 64 hex digits.
    public_key: String,
    not_before: u32,
    not_after: u32,
    revoked: bool,
}

/// The city's ride keys, as every server signs and verifies with them.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct KeyScheduleView {
    keys: Vec<ScheduledKeyView>,
}

fn key_view(k: &citypay_transit::ScheduledKey) -> ScheduledKeyView {
    ScheduledKeyView { key_id: k.key_id, public_key: hex::encode(&k.public_key), not_before: k.validity.not_before, not_after: k.validity.not_after, revoked: k.revoked }
}

fn schedule_view(keys: &[citypay_transit::ScheduledKey]) -> KeyScheduleView {
    KeyScheduleView { keys: keys.iter().map(key_view).collect() }
}

fn platform_only(operator: &OperatorCaller) -> Result<(), ApiError> {
    if operator.role == Role::PlatformOperator { Ok(()) } else { Err(ApiError::forbidden("only platform operators manage ride keys")) }
}

/// The city's ride keys (platform operators), read fresh from the city's schedule.
#[utoipa::path(get, path = "/v1/transit/ride-keys", security(("operator" = [])), tag = "transit",
    responses((status = OK, body = KeyScheduleView), (status = FORBIDDEN, body = ErrorBody)))]
pub(crate) async fn key_schedule(State(state): State<AppState>, operator: OperatorCaller) -> Result<AppJson<KeyScheduleView>, ApiError> {
    platform_only(&operator)?;
    state.transit.refresh_keys().await?;
    Ok(AppJson(schedule_view(&state.transit.key_schedule())))
}

/// Rotates the city's ride key (platform operators): a new key signs from now on, on every
/// server of the city within seconds, and the previous one verifies for the overlap.
#[utoipa::path(post, path = "/v1/transit/ride-keys", security(("operator" = [])), tag = "transit", params(IdempotencyKey), request_body = RotationRequest,
    responses((status = CREATED, body = ScheduledKeyView), (status = CONFLICT, body = ErrorBody)))]
pub(crate) async fn rotate_key(State(state): State<AppState>, operator: OperatorCaller, request: Idempotent<RotationRequest>) -> Result<Response, ApiError> {
    platform_only(&operator)?;
    let caller = Caller::Operator(operator.id);
    once(&state, &caller, &request.key, request.fingerprint, StatusCode::CREATED, async {
        let overlap_s = request.body.overlap_hours.saturating_mul(3_600);
        // The answer is kept with the rotation: a retry running it again would rotate twice.
        let keep = |k: &citypay_transit::ScheduledKey| vec![super::replay::answer_row(&state, &caller, &request.key, request.fingerprint, StatusCode::CREATED, &key_view(k))];
        let key = state.transit.rotate_key(overlap_s, keep).await?;
        tracing::info!(operator = operator.id, key_id = key.key_id, "ride key rotated");
        Ok(key_view(&key))
    })
    .await
}

/// Revokes a ride key for the city (platform operators): no server signs with it, and
/// validators refuse what it signed from their next download.
#[utoipa::path(post, path = "/v1/transit/ride-keys/{id}/revocation", security(("operator" = [])), tag = "transit",
    params(("id" = u16, Path, description = "The key id")),
    responses((status = OK, body = KeyScheduleView), (status = NOT_FOUND, body = ErrorBody)))]
pub(crate) async fn revoke_key(State(state): State<AppState>, operator: OperatorCaller, Path(id): Path<u16>) -> Result<AppJson<KeyScheduleView>, ApiError> {
    platform_only(&operator)?;
    state.transit.revoke_key(id).await?;
    tracing::info!(operator = operator.id, key_id = id, "ride key revoked");
    Ok(AppJson(schedule_view(&state.transit.key_schedule())))
}

/// A service day.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct DateQuery {
    /// `YYYY-MM-DD`.
    #[param(format = Date)]
    date: String,
}

/// A rider's fared day.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct RiderDayView {
    date: String,
    /// Trips (legs joined by transfers count once).
    trips: u64,
    /// What the day's fares came to.
    fares: Money,
    /// Taken from the wallet so far.
    charged: Money,
    /// Still owed (arrears).
    owed: Money,
    /// Each trip: its fare and how it was reached (transfers, discounts, the daily cap).
    trip_fares: Vec<TripView>,
}

/// One trip of a rider's day.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct TripView {
    fare: Money,
    reason: String,
}

/// The caller's fared trips of a service day (404 when they did not travel or it is not fared
/// yet).
#[utoipa::path(get, path = "/v1/transit/my-day", security(("resident" = [])), tag = "transit", params(DateQuery),
    responses((status = OK, body = RiderDayView), (status = NOT_FOUND, body = ErrorBody)))]
pub(crate) async fn my_day(State(state): State<AppState>, ResidentCaller(me): ResidentCaller, Query(query): Query<DateQuery>) -> Result<AppJson<RiderDayView>, ApiError> {
    let day = service_day(&query.date)?;
    let fared = state.transit.rider_day(&me, day).await?;
    let (trips, due, charged, owed) = fared.ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "not_found", "no fared trips that day"))?;
    let trip_fares = state
        .transit
        .rider_trips(&me, day)
        .await?
        .into_iter()
        .map(|(fen, reason)| TripView { fare: money(fen), reason })
        .collect();
    Ok(AppJson(RiderDayView {
        date: query.date,
        trips,
        fares: money(due),
        charged: money(charged),
        owed: money(owed),
        trip_fares,
    }))
}

/// An operator's fared legs and fares of a service day.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct RevenueView {
    /// Legs begun on the operator's lines (a bus boarding, a metro ride gate to gate).
    legs: u64,
    /// Their fares after transfers, discounts and the daily cap: charged, plus arrears owed.
    fares: Money,
}

/// The calling transit operator's legs and fare revenue of a fared service day.
#[utoipa::path(get, path = "/v1/transit/revenue", security(("merchant" = [])), tag = "transit", params(DateQuery),
    responses((status = OK, body = RevenueView)))]
pub(crate) async fn revenue(State(state): State<AppState>, MerchantCaller(merchant): MerchantCaller, Query(query): Query<DateQuery>) -> Result<AppJson<RevenueView>, ApiError> {
    let (legs, fares) = state.transit.revenue(merchant, service_day(&query.date)?).await?;
    Ok(AppJson(RevenueView { legs, fares: money(fares) }))
}

/// A leg on the operator's lines.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct OperatorLegView {
    /// The rider's opaque account reference (not their wallet or name).
    account_ref: String,
    route_id: String,
    from_stop: String,
    /// Unix seconds.
    from_time: i64,
    /// Where the rider left the metro; `null` for a bus, or with no tap-out.
    to_stop: Option<String>,
    to_time: Option<i64>,
    /// No tap-out by the end of the service day: charged the line's maximum.
    tap_out_missing: bool,
    /// The fare before discounts.
    base_fare: Money,
    /// The leg's fare after transfers, discounts and the daily cap: what the operator is due.
    fare: Money,
}

/// The legs begun on the calling transit operator's lines on a service day, priced as the
/// fare run prices them, by rider then time, a page at a time.
#[utoipa::path(get, path = "/v1/transit/legs", security(("merchant" = [])), tag = "transit", params(DateQuery, crate::PageQuery),
    responses((status = OK, body = citypay_api_types::Page<OperatorLegView>), (status = BAD_REQUEST, body = ErrorBody)))]
pub(crate) async fn operator_legs(
    State(state): State<AppState>,
    MerchantCaller(merchant): MerchantCaller,
    Query(query): Query<DateQuery>,
    page: crate::PageRequest,
) -> Result<AppJson<citypay_api_types::Page<OperatorLegView>>, ApiError> {
    let after = match &page.cursor {
        Some(cursor) => Some((cursor.id.parse().map_err(|_| ApiError::bad_request("invalid_cursor", "cursor out of range"))?, cursor.sort_key)),
        None => None,
    };
    let limit = usize::try_from(page.limit).unwrap_or(usize::MAX);
    let legs = state.transit.operator_legs(merchant, service_day(&query.date)?, after, limit).await?;
    let next_cursor = (legs.len() == limit).then(|| legs.last()).flatten().map(|l| crate::Cursor::new(l.from_time, l.account_ref.to_string()).encode());
    let items = legs
        .into_iter()
        .map(|l| OperatorLegView {
            account_ref: l.account_ref.to_string(),
            route_id: l.route_id,
            from_stop: l.from_stop,
            from_time: l.from_time,
            to_stop: l.to_stop,
            to_time: l.to_time,
            tap_out_missing: l.tap_out_missing,
            base_fare: money(l.base_fen),
            fare: money(l.fare_fen),
        })
        .collect();
    Ok(AppJson(citypay_api_types::Page { items, next_cursor }))
}
