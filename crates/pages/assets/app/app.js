// The resident's app: sign up under one's real name, sign in, the balance and the statement,
// cards, top-ups and withdrawals; Pay (the payment code, computed here from a key that never
// leaves the phone), Scan (a shop's QR), Ride (the ride code, signed here), Bills, and Me (the
// account's safety). The payment and ride codes work with the network off.
"use strict";

(() => {
  const { api, el, announce, parseYuan, money, newKey, hex, unhex } = citypay;
  const keys = citypay.store("citypay-app");

  const i18n = citypay.languages({
    zh: {
      app_name: "城市支付",
      other_language: "English",
      welcome: "一个钱包，付遍全城：乘车、购物、缴费。",
      sign_in: "登录",
      sign_up: "实名注册",
      have_account: "已有账户？登录",
      no_account: "没有账户？实名注册",
      mobile: "手机号",
      password: "密码（至少8位）",
      name: "姓名（与身份证一致）",
      id_number: "身份证号",
      city: "所在城市",
      register: "注册并登录",
      tab_home: "首页",
      tab_pay: "付款",
      tab_scan: "扫一扫",
      tab_ride: "乘车",
      tab_bills: "缴费",
      tab_me: "我的",
      balance: "余额",
      available: "可用 {0}",
      held: "冻结中 {0}",
      class: "账户类别 {0}",
      top_up: "充值",
      withdraw: "提现",
      link_card: "绑定银行卡",
      card_number: "银行卡号",
      card: "银行卡",
      amount: "金额（元）",
      confirm: "确认",
      cancel: "取消",
      statement: "账单明细",
      more: "加载更多",
      no_lines: "还没有交易记录",
      holds: "冻结中的款项",
      topped_up: "已充值 {0}",
      withdrawn: "已提现 {0}",
      card_linked: "已绑定 {0}",
      no_cards: "请先绑定一张银行卡",
      pay_title: "付款码",
      pay_hint: "向收银员出示，每30秒刷新",
      code_digits: "付款码数字",
      refresh_in: "{0}秒后刷新",
      offline_ok: "无网络也可使用",
      enroll: "开通付款码",
      scan_title: "扫码付款",
      scan_start: "打开摄像头",
      scan_stop: "关闭摄像头",
      paste: "或粘贴二维码内容",
      paste_label: "二维码内容",
      read_paste: "识别",
      picture: "或选择一张二维码图片",
      pay_to: "付款给",
      enter_amount: "请输入金额（元）",
      pay: "确认付款",
      paid: "已付款 {0} 给 {1}",
      not_a_qr: "没有识别到二维码",
      camera_failed: "无法打开摄像头，请粘贴或选择图片",
      ride_title: "乘车码",
      ride_hint: "进站、出站时对准闸机扫描",
      ride_get: "开通乘车码",
      ride_valid: "有效期至 {0}",
      ride_offline: "乘车码在无网络时也可使用",
      today_trips: "今日行程",
      no_trips: "今天还没有已结算的行程",
      trips: "{0} 次行程，车费 {1}",
      owed: "欠费 {0}",
      pay_arrears: "补缴欠费",
      arrears_paid: "欠费已补缴",
      bills_title: "待缴账单",
      no_bills: "没有账单",
      bill_total: "合计 {0}，已缴 {1}",
      insured: "医保支付 {0}",
      pay_bill: "缴费",
      pay_chosen: "缴所选项目",
      receipt: "电子票据 {0}",
      bill_paid: "已缴费 {0}",
      contribution: "社保缴费",
      contribution_year: "缴费年度",
      contribution_id: "参保人身份证号",
      contribute: "缴纳",
      contributed: "已缴纳 {0}",
      status_open: "待缴",
      status_partly_paid: "部分已缴",
      status_paid: "已缴清",
      me_title: "我的",
      cards: "银行卡",
      devices: "付款设备",
      device: "设备 {0}",
      revoked: "已停用",
      revoke: "停用",
      sessions: "登录设备",
      this_session: "本机",
      end: "退出该设备",
      end_others: "退出其他所有设备",
      change_password: "修改密码",
      current_password: "当前密码",
      new_password: "新密码（至少8位）",
      password_changed: "密码已修改，其他设备已退出",
      freeze: "冻结钱包",
      unfreeze: "解冻钱包",
      frozen: "钱包已冻结：不能付款和提现",
      unfrozen: "钱包已解冻",
      sign_out: "退出登录",
      language: "语言",
      bad_amount: "请输入正确的金额，如 12.50",
      offline: "网络不可用",
      kind_top_up: "充值",
      kind_withdrawal: "提现",
      kind_payment: "付款",
      kind_refund: "退款",
      kind_fare: "乘车",
      kind_fare_refund: "车费退还",
      kind_arrears: "补缴车费",
      kind_bill: "缴费",
      kind_fund_claim: "医保报销",
      kind_transfer: "转账",
      kind_other: "其他",
      send: "转账",
      send_mobile: "收款人手机号",
      find: "查找",
      send_to: "转给 {0}",
      note: "留言（可选）",
      sent: "已转账 {0} 给 {1}",
    },
    en: {
      app_name: "citypay",
      other_language: "中文",
      welcome: "One wallet for the whole city: rides, shops and bills.",
      sign_in: "Sign in",
      sign_up: "Sign up with your real name",
      have_account: "Have an account? Sign in",
      no_account: "New here? Sign up",
      mobile: "Mobile number",
      password: "Password (8 characters or more)",
      name: "Name (as on your ID card)",
      id_number: "ID card number",
      city: "City",
      register: "Sign up and sign in",
      tab_home: "Home",
      tab_pay: "Pay",
      tab_scan: "Scan",
      tab_ride: "Ride",
      tab_bills: "Bills",
      tab_me: "Me",
      balance: "Balance",
      available: "Available {0}",
      held: "Held {0}",
      class: "Account class {0}",
      top_up: "Top up",
      withdraw: "Withdraw",
      link_card: "Link a bank card",
      card_number: "Card number",
      card: "Bank card",
      amount: "Amount (yuan)",
      confirm: "Confirm",
      cancel: "Cancel",
      statement: "Statement",
      more: "Load more",
      no_lines: "Nothing here yet",
      holds: "Held amounts",
      topped_up: "Topped up {0}",
      withdrawn: "Withdrew {0}",
      card_linked: "Linked {0}",
      no_cards: "Link a bank card first",
      pay_title: "Payment code",
      pay_hint: "Show it to the cashier; it changes every 30 s",
      code_digits: "Payment code digits",
      refresh_in: "Changes in {0} s",
      offline_ok: "Works without a network",
      enroll: "Turn on the payment code",
      scan_title: "Scan to pay",
      scan_start: "Open the camera",
      scan_stop: "Close the camera",
      paste: "Or paste the QR code's text",
      paste_label: "QR code text",
      read_paste: "Read",
      picture: "Or choose a picture of the QR code",
      pay_to: "Pay to",
      enter_amount: "Enter the amount (yuan)",
      pay: "Pay",
      paid: "Paid {0} to {1}",
      not_a_qr: "No QR code was found",
      camera_failed: "The camera could not be opened: paste the code or choose a picture",
      ride_title: "Ride code",
      ride_hint: "Hold it to the gate's reader going in and out",
      ride_get: "Turn on the ride code",
      ride_valid: "Valid until {0}",
      ride_offline: "The ride code works without a network",
      today_trips: "Today's trips",
      no_trips: "No fared trips today yet",
      trips: "{0} trips, fares {1}",
      owed: "Owed {0}",
      pay_arrears: "Pay what is owed",
      arrears_paid: "Arrears paid",
      bills_title: "Bills",
      no_bills: "No bills",
      bill_total: "Total {0}, paid {1}",
      insured: "Insurance pays {0}",
      pay_bill: "Pay",
      pay_chosen: "Pay the chosen items",
      receipt: "Receipt {0}",
      bill_paid: "Paid {0}",
      contribution: "Social security",
      contribution_year: "Year",
      contribution_id: "Insured person's ID card number",
      contribute: "Pay contribution",
      contributed: "Paid {0}",
      status_open: "Open",
      status_partly_paid: "Partly paid",
      status_paid: "Paid",
      me_title: "Me",
      cards: "Bank cards",
      devices: "Payment devices",
      device: "Device {0}",
      revoked: "Revoked",
      revoke: "Revoke",
      sessions: "Signed-in devices",
      this_session: "This phone",
      end: "Sign that device out",
      end_others: "Sign out every other device",
      change_password: "Change password",
      current_password: "Current password",
      new_password: "New password (8 characters or more)",
      password_changed: "Password changed; other devices signed out",
      freeze: "Freeze the wallet",
      unfreeze: "Unfreeze the wallet",
      frozen: "The wallet is frozen: nothing can be paid or withdrawn",
      unfrozen: "The wallet is unfrozen",
      sign_out: "Sign out",
      language: "Language",
      bad_amount: "Enter an amount such as 12.50",
      offline: "No network",
      kind_top_up: "Top-up",
      kind_withdrawal: "Withdrawal",
      kind_payment: "Payment",
      kind_refund: "Refund",
      kind_fare: "Fare",
      kind_fare_refund: "Fare refund",
      kind_arrears: "Arrears",
      kind_bill: "Bill",
      kind_fund_claim: "Insurance claim",
      kind_transfer: "Transfer",
      kind_other: "Other",
      send: "Send money",
      send_mobile: "Recipient's mobile number",
      find: "Find",
      send_to: "To {0}",
      note: "Note (optional)",
      sent: "Sent {0} to {1}",
    },
  });
  const t = i18n.t;
  const main = document.getElementById("main");
  const tabs = document.getElementById("tabs");
  const CITIES = [
    [330100, "杭州 Hangzhou"],
    [420100, "武汉 Wuhan"],
    [350100, "福州 Fuzhou"],
    [120100, "天津 Tianjin"],
  ];
  let current = "home";
  let timer = null;
  let stopCamera = null;

  // ---- The phone's clock, corrected by the server's at sign-in ----------------------------

  function now() {
    return Date.now() + Number(localStorage.getItem("citypay.clock_offset_ms") || 0);
  }

  function fail(error) {
    if (error.status === 401) return showWelcome();
    announce(error.status === 0 ? t("offline") : error.message, "bad");
  }

  // ---- Screens ------------------------------------------------------------------------------

  function header() {
    document.getElementById("title").textContent = t("app_name");
    document.title = t("app_name");
    const language = document.getElementById("language");
    language.textContent = t("other_language");
    language.lang = i18n.lang === "zh" ? "en" : "zh-CN";
  }

  /** Replaces the screen, names it, and moves the focus to it (for screen readers). */
  function screen(title, ...content) {
    if (timer) clearInterval(timer);
    timer = null;
    if (stopCamera) stopCamera();
    stopCamera = null;
    main.replaceChildren(el("h2", { id: "screen-title" }, title), ...content);
    main.setAttribute("aria-labelledby", "screen-title");
    main.focus();
  }

  function showTabs(visible) {
    tabs.hidden = !visible;
    if (!visible) return;
    const names = ["home", "pay", "scan", "ride", "bills", "me"];
    tabs.setAttribute("aria-label", t("app_name"));
    tabs.replaceChildren(
      ...names.map((name) =>
        el("button", { type: "button", id: "tab-" + name, "aria-current": name === current ? "page" : false, onclick: () => go(name) }, t("tab_" + name)),
      ),
    );
  }

  function go(name) {
    current = name;
    showTabs(true);
    announce("");
    ({ home: showHome, pay: showPay, scan: showScan, ride: showRide, bills: showBills, me: showMe })[name]();
  }

  function field(id, label, attributes) {
    return [el("label", { for: id }, label), el("input", Object.assign({ id, name: id }, attributes))];
  }

  function showWelcome(signUp) {
    showTabs(false);
    if (signUp) return showSignUp();
    const form = el(
      "form",
      { onsubmit: (event) => (event.preventDefault(), signIn(form.elements.mobile.value, form.elements.password.value)) },
      field("mobile", t("mobile"), { type: "tel", autocomplete: "tel", inputmode: "numeric", required: true }),
      field("password", t("password"), { type: "password", autocomplete: "current-password", required: true, minlength: 8 }),
      el("button", { type: "submit", className: "primary" }, t("sign_in")),
    );
    screen(t("sign_in"), el("p", {}, t("welcome")), form, el("button", { type: "button", className: "link", id: "to-sign-up", onclick: () => showSignUp() }, t("no_account")));
  }

  function showSignUp() {
    const key = newKey();
    const city = el("select", { id: "city", name: "city" }, CITIES.map(([code, name]) => el("option", { value: code }, name)));
    const form = el(
      "form",
      {
        onsubmit: async (event) => {
          event.preventDefault();
          const fields = form.elements;
          const body = { city: Number(city.value), name: fields.namedItem("name").value.trim(), mobile: fields.mobile.value.trim(), id_number: fields.id_number.value.trim(), password: fields.password.value };
          try {
            await api("POST", "/v1/residents", body, key);
            await signIn(body.mobile, body.password);
          } catch (error) {
            fail(error);
          }
        },
      },
      el("label", { for: "city" }, t("city")),
      city,
      field("name", t("name"), { autocomplete: "name", required: true }),
      field("id_number", t("id_number"), { autocomplete: "off", required: true, maxlength: 18, minlength: 18 }),
      field("mobile", t("mobile"), { type: "tel", autocomplete: "tel", inputmode: "numeric", required: true }),
      field("password", t("password"), { type: "password", autocomplete: "new-password", required: true, minlength: 8 }),
      el("button", { type: "submit", className: "primary" }, t("register")),
    );
    screen(t("sign_up"), form, el("button", { type: "button", className: "link", onclick: () => showWelcome() }, t("have_account")));
  }

  async function signIn(mobile, password) {
    try {
      const ticket = localStorage.getItem("citypay.ticket." + mobile) || undefined;
      const session = await api("POST", "/v1/cookie-sessions", { mobile, password, client_ticket: ticket });
      localStorage.setItem("citypay.ticket." + mobile, session.client_ticket);
      localStorage.setItem("citypay.clock_offset_ms", String(session.server_time_ms - Date.now()));
      localStorage.setItem("citypay.session", session.session_id);
      go("home");
    } catch (error) {
      fail(error);
    }
  }

  // ---- Home: balance, cards, top-ups, withdrawals, statement ---------------------------------

  async function showHome() {
    const balance = el("section", { className: "card", "aria-labelledby": "balance-title" }, el("h3", { id: "balance-title" }, t("balance")));
    const actions = el(
      "div",
      { className: "row" },
      el("button", { type: "button", className: "primary", id: "top-up", onclick: () => movementForm("top_up") }, t("top_up")),
      el("button", { type: "button", id: "withdraw", onclick: () => movementForm("withdraw") }, t("withdraw")),
      el("button", { type: "button", id: "link-card", onclick: linkCardForm }, t("link_card")),
      el("button", { type: "button", id: "send-money", onclick: sendForm }, t("send")),
    );
    const form = el("div", { id: "home-form" });
    const lines = el("ul", { className: "lines", id: "statement" });
    const more = el("button", { type: "button", id: "more", hidden: true }, t("more"));
    const holds = el("div", { id: "holds" });
    screen(t("tab_home"), balance, actions, form, el("section", { className: "card", "aria-labelledby": "statement-title" }, el("h3", { id: "statement-title" }, t("statement")), holds, lines, more));
    try {
      const wallet = await api("GET", "/v1/wallet");
      balance.append(
        el("p", { className: "balance", id: "balance" }, money(wallet.balance)),
        el("p", { className: "muted" }, t("available", money(wallet.available)) + " · " + t("held", money(wallet.held))),
        el("p", { className: "muted" }, t("class", wallet.account_class)),
      );
    } catch (error) {
      return fail(error);
    }
    let cursor = null;
    const load = async () => {
      try {
        const page = await api("GET", "/v1/wallet/statement?limit=20" + (cursor ? "&cursor=" + encodeURIComponent(cursor) : ""));
        if (!cursor && page.holds.length > 0) {
          holds.replaceChildren(el("h4", {}, t("holds")), el("ul", { className: "lines" }, page.holds.map((h) => el("li", {}, el("span", {}, kindName(h.kind)), el("span", { className: "amount" }, money(h.amount))))));
        }
        if (!cursor && page.lines.length === 0) lines.append(el("li", { className: "muted" }, t("no_lines")));
        for (const line of page.lines) {
          const incoming = line.amount.amount > 0;
          lines.append(
            el(
              "li",
              { "data-kind": line.kind },
              el("span", {}, el("strong", {}, kindName(line.kind)), line.counterparty ? " · " + line.counterparty : "", el("br"), el("small", { className: "muted" }, line.at)),
              el("span", { className: "amount" + (incoming ? " in" : "") }, (incoming ? "+" : "") + money(line.amount), el("br"), el("small", { className: "muted" }, money(line.balance_after))),
            ),
          );
        }
        cursor = page.next_cursor;
        more.hidden = !cursor;
      } catch (error) {
        fail(error);
      }
    };
    more.addEventListener("click", load);
    // Scrolling to the end loads the next page too.
    new IntersectionObserver((entries) => entries.some((e) => e.isIntersecting) && cursor && load()).observe(more);
    load();
  }

  function kindName(kind) {
    const key = "kind_" + kind;
    return t(key) === key ? t("kind_other") : t(key);
  }

  async function movementForm(which) {
    const holder = document.getElementById("home-form");
    let cards;
    try {
      cards = (await api("GET", "/v1/wallet/cards")).cards;
    } catch (error) {
      return fail(error);
    }
    if (cards.length === 0) {
      announce(t("no_cards"), "bad");
      return linkCardForm();
    }
    const key = newKey();
    const card = el("select", { id: "movement-card" }, cards.map((c) => el("option", { value: c.card_id }, c.brand + " " + c.masked)));
    const amount = el("input", { id: "movement-amount", inputmode: "decimal", required: true, autocomplete: "off" });
    const form = el(
      "form",
      {
        className: "card",
        onsubmit: async (event) => {
          event.preventDefault();
          const fen = parseYuan(amount.value);
          if (fen === null) return announce(t("bad_amount"), "bad");
          try {
            const path = which === "top_up" ? "/v1/wallet/top-ups" : "/v1/wallet/withdrawals";
            const done = await api("POST", path, { card_id: card.value, amount: { amount: fen, currency: "CNY" } }, key);
            await showHome();
            announce(t(which === "top_up" ? "topped_up" : "withdrawn", money(done.amount)), "good");
          } catch (error) {
            fail(error);
          }
        },
      },
      el("h3", {}, t(which)),
      el("label", { for: "movement-card" }, t("card")),
      card,
      el("label", { for: "movement-amount" }, t("amount")),
      amount,
      el("div", { className: "row" }, el("button", { type: "submit", className: "primary", id: "movement-confirm" }, t("confirm")), el("button", { type: "button", onclick: () => holder.replaceChildren() }, t("cancel"))),
    );
    holder.replaceChildren(form);
    amount.focus();
  }

  /** Sending money to someone: find them by mobile number, confirm the masked name, send. */
  function sendForm() {
    const holder = document.getElementById("home-form");
    const key = newKey();
    const mobile = el("input", { id: "send-mobile", type: "tel", inputmode: "numeric", autocomplete: "off", required: true });
    const found = el("div", { id: "send-recipient", "aria-live": "polite" });
    const find = el(
      "form",
      {
        className: "card",
        onsubmit: async (event) => {
          event.preventDefault();
          try {
            const recipient = await api("POST", "/v1/transfer-recipients", { mobile: mobile.value.trim() });
            const amount = el("input", { id: "send-amount", inputmode: "decimal", required: true, autocomplete: "off" });
            const note = el("input", { id: "send-note", maxlength: 50, autocomplete: "off" });
            const confirm = el(
              "form",
              {
                onsubmit: async (submitted) => {
                  submitted.preventDefault();
                  const fen = parseYuan(amount.value);
                  if (fen === null) return announce(t("bad_amount"), "bad");
                  try {
                    const sent = await api("POST", "/v1/transfers", { mobile: mobile.value.trim(), amount: { amount: fen, currency: "CNY" }, note: note.value }, key);
                    await showHome();
                    announce(t("sent", money(sent.amount), sent.counterparty), "good");
                  } catch (error) {
                    fail(error);
                  }
                },
              },
              el("p", { className: "big", id: "send-name" }, t("send_to", recipient.masked_name)),
              el("label", { for: "send-amount" }, t("amount")),
              amount,
              el("label", { for: "send-note" }, t("note")),
              note,
              el("button", { type: "submit", className: "primary", id: "send-confirm" }, t("send")),
            );
            found.replaceChildren(confirm);
            amount.focus();
          } catch (error) {
            fail(error);
          }
        },
      },
      el("h3", {}, t("send")),
      el("label", { for: "send-mobile" }, t("send_mobile")),
      mobile,
      el("button", { type: "submit", id: "send-find" }, t("find")),
    );
    holder.replaceChildren(find, found);
    mobile.focus();
  }

  function linkCardForm() {
    const holder = document.getElementById("home-form") || main;
    const key = newKey();
    const number = el("input", { id: "card-number", inputmode: "numeric", autocomplete: "cc-number", required: true });
    const form = el(
      "form",
      {
        className: "card",
        onsubmit: async (event) => {
          event.preventDefault();
          try {
            const card = await api("POST", "/v1/wallet/cards", { card_number: number.value }, key);
            holder.replaceChildren();
            announce(t("card_linked", card.brand + " " + card.masked), "good");
          } catch (error) {
            fail(error);
          }
        },
      },
      el("h3", {}, t("link_card")),
      el("label", { for: "card-number" }, t("card_number")),
      number,
      el("button", { type: "submit", className: "primary", id: "card-confirm" }, t("confirm")),
    );
    holder.replaceChildren(form);
    number.focus();
  }

  // ---- Pay: the payment code, computed on the phone ------------------------------------------

  /** RFC 6238 with HMAC-SHA-256 and 8 digits, as citypay-codes computes it. */
  async function paymentCode(device, key, unixSeconds) {
    const counter = new ArrayBuffer(8);
    new DataView(counter).setBigUint64(0, BigInt(Math.floor(unixSeconds / 30)));
    const mac = new Uint8Array(await crypto.subtle.sign("HMAC", key, counter));
    const offset = mac[mac.length - 1] & 0x0f;
    const value = (((mac[offset] & 0x7f) << 24) | (mac[offset + 1] << 16) | (mac[offset + 2] << 8) | mac[offset + 3]) >>> 0;
    return "88" + String(device).padStart(8, "0") + String(value % 100000000).padStart(8, "0");
  }

  /** Enrols this phone: the secret is imported at once as a key no script can read back. */
  async function enroll() {
    const enrolled = await api("POST", "/v1/payment-devices");
    const key = await crypto.subtle.importKey("raw", unhex(enrolled.secret), { name: "HMAC", hash: "SHA-256" }, false, ["sign"]);
    const device = { device: enrolled.device, key };
    await keys.put("device", device);
    return device;
  }

  async function showPay() {
    const holder = el("div", { className: "codes", id: "pay-codes" });
    screen(t("pay_title"), el("p", { className: "muted" }, t("pay_hint")), holder);
    let device = await keys.get("device");
    if (!device) {
      holder.append(
        el(
          "button",
          {
            type: "button",
            className: "primary",
            id: "enroll",
            onclick: async () => {
              try {
                device = await enroll();
                showPay();
              } catch (error) {
                fail(error);
              }
            },
          },
          t("enroll"),
        ),
      );
      return;
    }
    const draw = async () => {
      const seconds = Math.floor(now() / 1000);
      const code = await paymentCode(device.device, device.key, seconds);
      const grouped = code.replace(/(\d{4})(?=\d)/g, "$1 ");
      holder.replaceChildren(
        citypay.barcodeSvg(code, t("pay_title")),
        citypay.qrSvg(code, t("pay_title")),
        el("p", { className: "digits", id: "payment-code", "data-code": code, "aria-label": t("code_digits") + " " + code.split("").join(" ") }, grouped),
        el("p", { className: "muted", id: "refresh-in" }, t("refresh_in", 30 - (seconds % 30))),
        el("p", { className: "muted" }, t("offline_ok")),
      );
    };
    await draw();
    timer = setInterval(() => {
      const seconds = Math.floor(now() / 1000);
      if (seconds % 30 === 0) draw();
      else {
        const left = document.getElementById("refresh-in");
        if (left) left.textContent = t("refresh_in", 30 - (seconds % 30));
      }
    }, 1000);
  }

  // ---- Scan: a shop's QR code -----------------------------------------------------------------

  function showScan() {
    const video = el("video", { id: "camera", muted: true, hidden: true, "aria-label": t("scan_title") });
    const start = el("button", { type: "button", className: "primary", id: "scan-start" }, t("scan_start"));
    start.addEventListener("click", async () => {
      if (stopCamera) {
        stopCamera();
        stopCamera = null;
        video.hidden = true;
        start.textContent = t("scan_start");
        return;
      }
      try {
        video.hidden = false;
        start.textContent = t("scan_stop");
        stopCamera = await citypay.scanCamera(video, (found) => {
          stopCamera = null;
          confirmPayment(found.data);
          return true;
        });
      } catch (error) {
        video.hidden = true;
        start.textContent = t("scan_start");
        announce(t("camera_failed"), "bad");
      }
    });
    const pasted = el("textarea", { id: "qr-text", autocomplete: "off", spellcheck: "false" });
    const paste = el(
      "form",
      { onsubmit: (event) => (event.preventDefault(), pasted.value.trim() && confirmPayment(pasted.value.trim())) },
      el("label", { for: "qr-text" }, t("paste_label")),
      pasted,
      el("button", { type: "submit", id: "qr-read" }, t("read_paste")),
    );
    const picture = el("input", { id: "qr-picture", type: "file", accept: "image/*" });
    picture.addEventListener("change", async () => {
      const file = picture.files && picture.files[0];
      if (!file) return;
      const found = await citypay.readQrFromFile(file).catch(() => null);
      if (found) confirmPayment(found.data);
      else announce(t("not_a_qr"), "bad");
    });
    screen(
      t("scan_title"),
      start,
      video,
      el("h3", {}, t("paste")),
      paste,
      el("h3", {}, t("picture")),
      el("label", { for: "qr-picture" }, t("picture")),
      picture,
    );
    // Straight to the camera: it is what the screen is for.
    if (navigator.mediaDevices) start.click();
  }

  async function confirmPayment(payload) {
    let preview;
    try {
      preview = await api("POST", "/v1/payments/qr/preview", { payload });
    } catch (error) {
      return fail(error);
    }
    const key = newKey();
    const amount = preview.amount ? null : el("input", { id: "pay-amount", inputmode: "decimal", required: true, autocomplete: "off" });
    const form = el(
      "form",
      {
        onsubmit: async (event) => {
          event.preventDefault();
          const body = { payload };
          if (amount) {
            const fen = parseYuan(amount.value);
            if (fen === null) return announce(t("bad_amount"), "bad");
            body.amount = { amount: fen, currency: "CNY" };
          }
          try {
            const trade = await api("POST", "/v1/payments/qr", body, key);
            screen(t("scan_title"), el("p", { className: "big", id: "paid" }, t("paid", money(trade.amount), preview.merchant_name)), el("button", { type: "button", onclick: () => go("home") }, t("tab_home")));
            announce(t("paid", money(trade.amount), preview.merchant_name), "good");
          } catch (error) {
            fail(error);
          }
        },
      },
      el("p", {}, t("pay_to")),
      el("p", { className: "big", id: "pay-merchant" }, preview.merchant_name),
      preview.amount ? el("p", { className: "big", id: "pay-amount-shown" }, money(preview.amount)) : [el("label", { for: "pay-amount" }, t("enter_amount")), amount],
      el("div", { className: "row" }, el("button", { type: "submit", className: "primary", id: "pay-confirm" }, t("pay")), el("button", { type: "button", onclick: () => go("scan") }, t("cancel"))),
    );
    screen(t("scan_title"), form);
  }

  // ---- Ride: the ride code, signed on the phone -------------------------------------------

  const RIDE_TAG = new TextEncoder().encode("citypay-ride/code/v1");

  /** The phone's rider key (made here, never leaving it) and the platform's credential for it,
   * fetched again when less than an hour of it is left and the network answers. */
  async function rideCredential() {
    let rider = await keys.get("rider");
    if (!rider) {
      const pair = await crypto.subtle.generateKey({ name: "Ed25519" }, false, ["sign", "verify"]);
      rider = { privateKey: pair.privateKey, publicHex: hex(await crypto.subtle.exportKey("raw", pair.publicKey)) };
      await keys.put("rider", rider);
    }
    let credential = await keys.get("credential");
    const nowS = Math.floor(now() / 1000);
    if (!credential || credential.publicHex !== rider.publicHex || credential.valid_until - nowS < 3600) {
      try {
        const issued = await api("POST", "/v1/ride-credentials", { rider_key: rider.publicHex }, newKey());
        credential = { hex: issued.credential, valid_until: issued.valid_until, publicHex: rider.publicHex };
        await keys.put("credential", credential);
      } catch (error) {
        if (!credential || credential.valid_until <= nowS) throw error;
      }
    }
    return { rider, credential };
  }

  /** The ride code's bytes: version, credential, time and counter (big-endian), signature. */
  async function rideCode(rider, credential) {
    const body = unhex(credential.hex);
    const unsigned = new Uint8Array(1 + body.length + 8);
    unsigned[0] = 1;
    unsigned.set(body, 1);
    const view = new DataView(unsigned.buffer);
    const counter = Number(localStorage.getItem("citypay.ride.counter") || 0) + 1;
    localStorage.setItem("citypay.ride.counter", String(counter));
    view.setUint32(1 + body.length, Math.floor(now() / 1000));
    view.setUint32(5 + body.length, counter);
    const message = new Uint8Array(RIDE_TAG.length + unsigned.length);
    message.set(RIDE_TAG);
    message.set(unsigned, RIDE_TAG.length);
    const signature = new Uint8Array(await crypto.subtle.sign({ name: "Ed25519" }, rider.privateKey, message));
    const code = new Uint8Array(unsigned.length + 64);
    code.set(unsigned);
    code.set(signature, unsigned.length);
    return code;
  }

  async function showRide() {
    const holder = el("div", { className: "codes", id: "ride-codes" });
    const day = el("section", { className: "card", "aria-labelledby": "trips-title" }, el("h3", { id: "trips-title" }, t("today_trips")));
    screen(t("ride_title"), el("p", { className: "muted" }, t("ride_hint")), holder, day);
    let ride;
    try {
      ride = await rideCredential();
    } catch (error) {
      holder.append(el("button", { type: "button", className: "primary", onclick: showRide }, t("ride_get")));
      return fail(error);
    }
    const draw = async () => {
      const code = await rideCode(ride.rider, ride.credential);
      holder.replaceChildren(
        citypay.qrSvg(code, t("ride_title")),
        el("p", { className: "muted", id: "ride-code", "data-code": hex(code) }, t("ride_valid", new Date(ride.credential.valid_until * 1000).toLocaleString(i18n.lang === "zh" ? "zh-CN" : "en-GB"))),
        el("p", { className: "muted" }, t("ride_offline")),
      );
    };
    await draw();
    timer = setInterval(draw, 30000);
    const today = new Date(now() + 8 * 3600 * 1000).toISOString().slice(0, 10);
    try {
      const fared = await api("GET", "/v1/transit/my-day?date=" + today);
      day.append(el("p", {}, t("trips", fared.trips, money(fared.fares))));
      day.append(el("ul", { className: "lines" }, fared.trip_fares.map((trip) => el("li", {}, el("span", {}, trip.reason), el("span", { className: "amount" }, money(trip.fare))))));
      if (fared.owed.amount > 0) {
        day.append(
          el("p", {}, t("owed", money(fared.owed))),
          el("button", { type: "button", onclick: payArrears }, t("pay_arrears")),
        );
      }
    } catch (error) {
      if (error.status === 404) day.append(el("p", { className: "muted" }, t("no_trips")));
      else if (error.status !== 0) fail(error);
    }
  }

  async function payArrears() {
    try {
      await api("POST", "/v1/transit/arrears-payments", undefined, newKey());
      announce(t("arrears_paid"), "good");
      showRide();
    } catch (error) {
      fail(error);
    }
  }

  // ---- Bills ----------------------------------------------------------------------------------

  async function showBills() {
    const list = el("div", { id: "bills" });
    const contribution = contributionForm();
    screen(t("bills_title"), list, contribution);
    let bills;
    try {
      bills = (await api("GET", "/v1/my/bills?limit=50")).bills;
    } catch (error) {
      return fail(error);
    }
    if (bills.length === 0) list.append(el("p", { className: "muted" }, t("no_bills")));
    for (const bill of bills) list.append(billCard(bill));
  }

  function billCard(bill) {
    const key = newKey();
    const open = bill.status !== "paid";
    const picks = bill.items.map((item, index) => {
      const paid = bill.paid_items.includes(index);
      const id = "item-" + bill.bill_no + "-" + index;
      return el(
        "li",
        {},
        bill.pick_items && open && !paid ? el("input", { type: "checkbox", id, value: index, className: "pick" }) : null,
        el("label", { for: bill.pick_items && open && !paid ? id : null }, item.name + (paid ? " ✓" : "")),
        el("span", { className: "amount" }, money(item.amount)),
      );
    });
    const result = el("div", { "aria-live": "polite" });
    const pay = async (chosen) => {
      try {
        const payment = await api("POST", "/v1/my/bills/" + encodeURIComponent(bill.bill_no) + "/payments", chosen ? { items: chosen } : {}, key);
        result.replaceChildren(el("p", { className: "good", id: "bill-paid-" + bill.bill_no }, t("bill_paid", money(payment.amount))), el("p", {}, t("receipt", payment.receipt_no)), el("pre", { className: "receipt" }, payment.receipt.text));
        announce(t("bill_paid", money(payment.amount)), "good");
      } catch (error) {
        fail(error);
      }
    };
    const card = el(
      "section",
      { className: "card", "aria-labelledby": "bill-" + bill.bill_no, "data-bill": bill.bill_no },
      el("h3", { id: "bill-" + bill.bill_no }, bill.title),
      el("p", { className: "muted" }, bill.payer + " · " + t("status_" + bill.status)),
      el("ul", { className: "lines" }, picks),
      el("p", {}, t("bill_total", money(bill.total), money(bill.paid))),
      bill.insured.amount > 0 ? el("p", { className: "muted" }, t("insured", money(bill.insured))) : null,
      open ? el("button", { type: "button", className: "primary", id: "pay-bill-" + bill.bill_no, onclick: () => pay(null) }, t("pay_bill")) : null,
      open && bill.pick_items
        ? el(
            "button",
            { type: "button", onclick: () => pay(Array.from(card.querySelectorAll("input.pick:checked"), (box) => Number(box.value))) },
            t("pay_chosen"),
          )
        : null,
      result,
    );
    return card;
  }

  function contributionForm() {
    const key = newKey();
    const year = el("input", { id: "contribution-year", inputmode: "numeric", required: true, value: new Date(now()).getFullYear() });
    const idNumber = el("input", { id: "contribution-id", required: true, maxlength: 18, autocomplete: "off" });
    const city = el("select", { id: "contribution-city" }, CITIES.map(([code, name]) => el("option", { value: code }, name)));
    return el(
      "form",
      {
        className: "card",
        onsubmit: async (event) => {
          event.preventDefault();
          try {
            const paid = await api("POST", "/v1/social-security/contributions", { city: Number(city.value), id_number: idNumber.value.trim(), year: Number(year.value) }, key);
            announce(t("contributed", money(paid.amount)), "good");
          } catch (error) {
            fail(error);
          }
        },
      },
      el("h3", {}, t("contribution")),
      el("label", { for: "contribution-city" }, t("city")),
      city,
      el("label", { for: "contribution-year" }, t("contribution_year")),
      year,
      el("label", { for: "contribution-id" }, t("contribution_id")),
      idNumber,
      el("button", { type: "submit" }, t("contribute")),
    );
  }

  // ---- Me: cards, devices, sessions, password, freeze ----------------------------------------

  async function showMe() {
    const cards = el("section", { className: "card", "aria-labelledby": "cards-title" }, el("h3", { id: "cards-title" }, t("cards")));
    const devices = el("section", { className: "card", "aria-labelledby": "devices-title" }, el("h3", { id: "devices-title" }, t("devices")));
    const sessions = el("section", { className: "card", "aria-labelledby": "sessions-title" }, el("h3", { id: "sessions-title" }, t("sessions")));
    const safety = el(
      "section",
      { className: "card" },
      passwordForm(),
      el("button", { type: "button", className: "danger", id: "freeze", onclick: freeze }, t("freeze")),
      unfreezeForm(),
    );
    screen(t("me_title"), cards, devices, sessions, safety, el("button", { type: "button", id: "sign-out", onclick: signOut }, t("sign_out")));
    try {
      const [cardList, deviceList, sessionList] = await Promise.all([api("GET", "/v1/wallet/cards"), api("GET", "/v1/payment-devices"), api("GET", "/v1/my/sessions")]);
      cards.append(el("ul", { className: "lines" }, cardList.cards.map((c) => el("li", {}, el("span", {}, c.brand), el("span", {}, c.masked)))));
      const mine = await keys.get("device");
      devices.append(
        el(
          "ul",
          { className: "lines" },
          deviceList.devices.map((d) =>
            el(
              "li",
              {},
              el("span", {}, t("device", d.device) + (mine && mine.device === d.device ? " · " + t("this_session") : "")),
              d.revoked_at ? el("span", { className: "muted" }, t("revoked")) : el("button", { type: "button", className: "danger", "aria-label": t("revoke") + " " + t("device", d.device), onclick: () => revoke(d.device) }, t("revoke")),
            ),
          ),
        ),
      );
      sessions.append(
        el(
          "ul",
          { className: "lines" },
          sessionList.sessions.map((s) =>
            el(
              "li",
              {},
              el("span", {}, new Date(s.created_at * 1000).toLocaleString(i18n.lang === "zh" ? "zh-CN" : "en-GB") + (s.current ? " · " + t("this_session") : "")),
              s.current ? null : el("button", { type: "button", "aria-label": t("end") + " " + s.session_id.slice(0, 6), onclick: () => endSession(s.session_id) }, t("end")),
            ),
          ),
        ),
        el("button", { type: "button", onclick: endOthers }, t("end_others")),
      );
    } catch (error) {
      fail(error);
    }
  }

  async function revoke(device) {
    try {
      await api("DELETE", "/v1/payment-devices/" + device);
      const mine = await keys.get("device");
      if (mine && mine.device === device) await keys.delete("device");
      showMe();
    } catch (error) {
      fail(error);
    }
  }

  async function endSession(id) {
    try {
      await api("DELETE", "/v1/my/sessions/" + encodeURIComponent(id));
      showMe();
    } catch (error) {
      fail(error);
    }
  }

  async function endOthers() {
    try {
      await api("POST", "/v1/my/sessions/end-others");
      showMe();
    } catch (error) {
      fail(error);
    }
  }

  function passwordForm() {
    const form = el(
      "form",
      {
        onsubmit: async (event) => {
          event.preventDefault();
          try {
            await api("POST", "/v1/my/password", { current_password: form.elements.current.value, new_password: form.elements.next.value });
            form.reset();
            announce(t("password_changed"), "good");
          } catch (error) {
            fail(error);
          }
        },
      },
      el("h3", {}, t("change_password")),
      field("current", t("current_password"), { type: "password", autocomplete: "current-password", required: true }),
      field("next", t("new_password"), { type: "password", autocomplete: "new-password", required: true, minlength: 8 }),
      el("button", { type: "submit" }, t("change_password")),
    );
    return form;
  }

  async function freeze() {
    try {
      await api("POST", "/v1/wallet/freeze");
      announce(t("frozen"), "good");
    } catch (error) {
      fail(error);
    }
  }

  function unfreezeForm() {
    const form = el(
      "form",
      {
        onsubmit: async (event) => {
          event.preventDefault();
          try {
            await api("POST", "/v1/wallet/unfreeze", { password: form.elements.unfreeze_password.value });
            form.reset();
            announce(t("unfrozen"), "good");
          } catch (error) {
            fail(error);
          }
        },
      },
      el("h3", {}, t("unfreeze")),
      field("unfreeze_password", t("current_password"), { type: "password", autocomplete: "current-password", required: true }),
      el("button", { type: "submit", id: "unfreeze" }, t("unfreeze")),
    );
    return form;
  }

  async function signOut() {
    try {
      await api("DELETE", "/v1/cookie-sessions/current");
    } catch (error) {
      if (error.status !== 401) return fail(error);
    }
    showWelcome();
  }

  // ---- Start ----------------------------------------------------------------------------------

  document.getElementById("language").addEventListener("click", () => {
    i18n.set(i18n.lang === "zh" ? "en" : "zh");
    header();
    if (tabs.hidden) showWelcome();
    else go(current);
  });

  async function start() {
    header();
    if ("serviceWorker" in navigator) navigator.serviceWorker.register("/app/sw.js", { scope: "/app/" }).catch(() => {});
    const wanted = location.hash.replace("#", "");
    try {
      await api("GET", "/v1/wallet");
      go(["home", "pay", "scan", "ride", "bills", "me"].includes(wanted) ? wanted : "home");
    } catch (error) {
      // Offline with a session from before: the codes still work.
      if (error.status === 0 && ["pay", "ride"].includes(wanted)) return go(wanted);
      if (error.status === 0 && (await keys.get("device"))) return go("pay");
      showWelcome(wanted === "sign-up");
    }
  }
  start();
})();
