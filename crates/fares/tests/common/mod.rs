//! Shared helpers for the fare tests (included with `mod common;`).
#![allow(dead_code, unreachable_pub)]

use citypay_fares::{Direction, Tap};

/// 2025-03-03 08:00 Asia/Shanghai.
pub const T0: i64 = 1_740_960_000;
pub const MIN: i64 = 60;

/// Line M1 of the shipped feed, in order (23 stations, interchange `XNJ` at index 9).
pub const M1: [&str; 23] = [
    "M1_LIUYUAN",
    "M1_XIAOJIE",
    "M1_XIHEBA",
    "M1_HUAXIA_ROAD",
    "M1_BENXI_ROAD",
    "M1_GUOYUAN",
    "M1_XIZHAN",
    "M1_XIMALU",
    "M1_XIBEIJIAO",
    "XNJ",
    "M1_ERWEILU",
    "M1_HAIGUANGSI",
    "M1_ANSHAN_ROAD",
    "M1_YINGKOUDAO",
    "M1_XIAOBAILOU",
    "M1_XIAWAFANG",
    "M1_NANLOU",
    "M1_TUCHENG",
    "M1_CHENTANGZHUANG",
    "M1_FUXINGMEN",
    "M1_HUASHANLI",
    "M1_CAIJIABAO",
    "M1_SHUANGLIN",
];

/// Line M2 (22 stations, interchange `XNJ` at index 6).
pub const M2: [&str; 22] = [
    "M2_CAOZHUANG",
    "M2_BIANXING",
    "M2_JIEYUAN_XIDAO",
    "M2_XIANYANG_ROAD",
    "M2_CHANGHONG_PARK",
    "M2_GUANGKAI_SIMA_ROAD",
    "XNJ",
    "M2_GULOU",
    "M2_DONGNANJIAO",
    "M2_JIANGUODAO",
    "M2_TIANJINZHAN",
    "M2_YUANYANG_GUOJI",
    "M2_SHUNCHIQIAO",
    "M2_JINGJIANGLU",
    "M2_CUIFUXINCUN",
    "M2_YUDONGCHENG",
    "M2_DENGZHOU_ROAD",
    "M2_GUOSHANLU",
    "M2_KONGGANG_JINGJIQU",
    "M2_BINHAI_AIRPORT",
    "M2_HUANGHE_DAO",
    "M2_AIRPORT_EAST",
];

pub fn bus(route: &str, stop: &str, t: i64, media: &str) -> Tap {
    Tap::new(stop, route, t, Direction::In, media)
}

/// A metro ride on M1 from index `from` to index `to`, entering at `t`, 2 minutes a station.
pub fn m1_ride(from: usize, to: usize, t: i64, media: &str) -> [Tap; 2] {
    let minutes = i64::try_from(from.abs_diff(to)).unwrap_or(0) * 2 * MIN;
    [
        Tap::new(M1[from], "M1", t, Direction::In, media),
        Tap::new(M1[to], "M1", t + minutes, Direction::Out, media),
    ]
}
