// The merchant's till: a cashier signs in with the credential the merchant made for them, rings
// up a sale and shows its QR (watching it get paid), charges the customer's payment code
// (scanned or typed), records cash, lists the shift, refunds within their limit; a manager
// also downloads the settlement file. Each till numbers its own orders, so a retried call is
// answered as the first.
"use strict";

(() => {
  const { api, el, announce, parseYuan, money, yuan, newKey } = citypay;

  const i18n = citypay.languages({
    zh: {
      title: "收银台",
      other_language: "English",
      sign_in: "收银员登录",
      cashier_number: "收银员编号",
      password: "密码",
      enter: "登录",
      sign_out: "退出",
      ring_up: "收款",
      amount: "金额（元）",
      subject: "商品",
      default_subject: "商品",
      show_qr: "出示收款码",
      cash: "现金收款",
      qr_for: "请顾客扫码支付 {0}",
      waiting: "等待支付…",
      paid: "已收款 {0}",
      closed: "订单已关闭",
      customer_code: "扫顾客付款码",
      code: "付款码（18位数字）",
      charge: "扣款",
      scan: "用摄像头扫码",
      stop_scan: "停止扫码",
      cash_recorded: "现金收款 {0} 已记录",
      shift: "本班交易",
      refresh: "刷新",
      taken_electronic: "电子收款合计",
      taken_cash: "现金合计",
      time: "时间",
      order: "订单号",
      method: "方式",
      status: "状态",
      refunded: "已退",
      refund: "退款",
      refund_amount: "退款金额（元）",
      refund_of: "订单 {0} 退款",
      do_refund: "确认退款",
      refund_done: "已退款 {0}",
      settlement: "结算文件（店长）",
      date: "日期",
      download: "下载",
      bad_amount: "请输入正确的金额，如 12.50",
      bad_code: "付款码是18位数字",
      role_cashier: "收银员",
      role_manager: "店长",
      refund_limit: "单笔退款上限 {0}",
      method_qr: "扫码",
      method_payment_code: "付款码",
      method_cash: "现金",
      no_trades: "本班还没有交易",
      status_waiting: "待支付",
      status_paid: "已支付",
      status_closed: "已关闭",
      status_finished: "已完结",
      camera_failed: "无法打开摄像头，请手动输入付款码",
    },
    en: {
      title: "Till",
      other_language: "中文",
      sign_in: "Cashier sign-in",
      cashier_number: "Cashier number",
      password: "Password",
      enter: "Sign in",
      sign_out: "Sign out",
      ring_up: "Ring up",
      amount: "Amount (yuan)",
      subject: "Item",
      default_subject: "Goods",
      show_qr: "Show QR to pay",
      cash: "Paid in cash",
      qr_for: "Customer scans to pay {0}",
      waiting: "Waiting for payment…",
      paid: "Paid {0}",
      closed: "The order is closed",
      customer_code: "Customer's payment code",
      code: "Payment code (18 digits)",
      charge: "Charge",
      scan: "Scan with the camera",
      stop_scan: "Stop scanning",
      cash_recorded: "Cash sale of {0} recorded",
      shift: "This shift",
      refresh: "Refresh",
      taken_electronic: "Taken electronically",
      taken_cash: "Taken in cash",
      time: "Time",
      order: "Order",
      method: "Method",
      status: "Status",
      refunded: "Refunded",
      refund: "Refund",
      refund_amount: "Refund amount (yuan)",
      refund_of: "Refund of order {0}",
      do_refund: "Refund",
      refund_done: "Refunded {0}",
      settlement: "Settlement file (managers)",
      date: "Date",
      download: "Download",
      bad_amount: "Enter an amount such as 12.50",
      bad_code: "A payment code has 18 digits",
      role_cashier: "Cashier",
      role_manager: "Manager",
      refund_limit: "Refunds up to {0} each",
      method_qr: "QR",
      method_payment_code: "Payment code",
      method_cash: "Cash",
      no_trades: "No trades this shift yet",
      status_waiting: "Waiting",
      status_paid: "Paid",
      status_closed: "Closed",
      status_finished: "Finished",
      camera_failed: "The camera could not be opened: type the code instead",
    },
  });
  const t = i18n.t;
  const main = document.getElementById("main");
  let me = null;
  let stopCamera = null;
  let watching = null;

  /** An order number of this till: the cashier's number, the time, and a random tail. */
  function orderNo() {
    const now = new Date();
    const stamp = now.toISOString().replace(/[^0-9]/g, "").slice(2, 14);
    const tail = Array.from(crypto.getRandomValues(new Uint8Array(3)), (b) => b.toString(36).padStart(2, "0")).join("");
    return "T" + me.cashier.cashier_number + stamp + tail.toUpperCase();
  }

  function fail(error) {
    announce(error.message || String(error), "bad");
  }

  function header() {
    document.getElementById("title").textContent = t("title");
    document.title = t("title") + " citypay";
    const language = document.getElementById("language");
    language.textContent = t("other_language");
    language.lang = i18n.lang === "zh" ? "en" : "zh-CN";
  }

  async function start() {
    header();
    try {
      me = await api("GET", "/v1/till/me");
      showTill();
    } catch (error) {
      if (error.status === 401 || error.status === 403) showSignIn();
      else fail(error);
    }
  }

  function showSignIn() {
    me = null;
    const number = el("input", { id: "cashier-number", name: "username", inputmode: "numeric", autocomplete: "username", required: true, pattern: "[0-9]{8}" });
    const password = el("input", { id: "cashier-password", name: "password", type: "password", autocomplete: "current-password", required: true });
    const form = el(
      "form",
      {
        onsubmit: async (event) => {
          event.preventDefault();
          try {
            const ticket = localStorage.getItem("citypay.till.ticket." + number.value) || undefined;
            const session = await api("POST", "/v1/till/sessions", { cashier_number: number.value, password: password.value, client_ticket: ticket });
            localStorage.setItem("citypay.till.ticket." + number.value, session.client_ticket);
            announce("");
            await start();
          } catch (error) {
            fail(error);
          }
        },
      },
      el("label", { for: "cashier-number" }, t("cashier_number")),
      number,
      el("label", { for: "cashier-password" }, t("password")),
      password,
      el("button", { type: "submit", className: "primary" }, t("enter")),
    );
    main.className = "";
    main.replaceChildren(el("section", { className: "card" }, el("h2", {}, t("sign_in")), form));
    number.focus();
  }

  function showTill() {
    const cashier = me.cashier;
    const role = cashier.role === "manager" ? t("role_manager") : t("role_cashier");
    const who = el(
      "section",
      { className: "card", "aria-labelledby": "who" },
      el("h2", { id: "who" }, me.merchant_name),
      el("p", {}, cashier.name + " · " + role + " · " + cashier.cashier_number),
      cashier.role === "manager" ? null : el("p", { className: "muted" }, t("refund_limit", money(cashier.refund_limit))),
      el("button", { type: "button", onclick: signOut }, t("sign_out")),
    );
    main.className = "wide";
    const sections = [who, ringUp(), customerCode(), shift()];
    if (cashier.role === "manager") sections.push(settlement());
    main.replaceChildren(...sections);
    refreshShift();
  }

  async function signOut() {
    try {
      await api("DELETE", "/v1/cookie-sessions/current");
    } catch (error) {
      if (error.status !== 401) return fail(error);
    }
    showSignIn();
  }

  function amountField(id) {
    return el("input", { id, name: id, inputmode: "decimal", autocomplete: "off", required: true, placeholder: "0.00" });
  }

  function ringUp() {
    const amount = amountField("sale-amount");
    const subject = el("input", { id: "sale-subject", value: t("default_subject"), maxlength: 256, required: true });
    const shown = el("div", { id: "sale-qr", className: "codes", "aria-live": "polite" });
    const read = () => {
      const fen = parseYuan(amount.value);
      if (fen === null) {
        announce(t("bad_amount"), "bad");
        amount.focus();
      }
      return fen;
    };
    const showQr = async () => {
      const fen = read();
      if (fen === null) return;
      const order = { out_trade_no: orderNo(), amount: { amount: fen, currency: "CNY" }, subject: subject.value };
      try {
        const created = await api("POST", "/v1/till/trades", order);
        shown.replaceChildren(
          el("p", { className: "big" }, t("qr_for", money(created.trade.amount))),
          citypay.qrSvg(created.qr_payload, t("qr_for", money(created.trade.amount))),
          el("p", { id: "sale-state", "data-order": order.out_trade_no, "data-payload": created.qr_payload }, t("waiting")),
        );
        watch(order.out_trade_no);
      } catch (error) {
        fail(error);
      }
    };
    const cash = async () => {
      const fen = read();
      if (fen === null) return;
      try {
        const sale = await api("POST", "/v1/till/cash-sales", { out_trade_no: orderNo(), amount: { amount: fen, currency: "CNY" }, subject: subject.value });
        announce(t("cash_recorded", money(sale.amount)), "good");
        amount.value = "";
        refreshShift();
      } catch (error) {
        fail(error);
      }
    };
    return el(
      "section",
      { className: "card", "aria-labelledby": "ring-up" },
      el("h2", { id: "ring-up" }, t("ring_up")),
      el(
        "form",
        { onsubmit: (event) => (event.preventDefault(), showQr()) },
        el("label", { for: "sale-amount" }, t("amount")),
        amount,
        el("label", { for: "sale-subject" }, t("subject")),
        subject,
        el("div", { className: "row" }, el("button", { type: "submit", className: "primary", id: "show-qr" }, t("show_qr")), el("button", { type: "button", id: "cash-sale", onclick: cash }, t("cash"))),
      ),
      shown,
    );
  }

  /** Watches a sale until it is paid or closed. */
  function watch(order) {
    if (watching) clearInterval(watching);
    watching = setInterval(async () => {
      try {
        const trade = await api("GET", "/v1/till/trades/" + encodeURIComponent(order));
        const state = document.getElementById("sale-state");
        if (trade.status === "WAIT_BUYER_PAY" || !state) return;
        clearInterval(watching);
        watching = null;
        state.textContent = trade.status === "TRADE_SUCCESS" ? t("paid", money(trade.amount)) : t("closed");
        state.dataset.status = trade.status;
        announce(state.textContent, trade.status === "TRADE_SUCCESS" ? "good" : "bad");
        refreshShift();
      } catch (error) {
        fail(error);
      }
    }, 1000);
  }

  function customerCode() {
    const amount = amountField("code-amount");
    const code = el("input", { id: "customer-code", inputmode: "numeric", autocomplete: "off", required: true, pattern: "[0-9 ]{18,22}" });
    const video = el("video", { id: "code-camera", muted: true, hidden: true, "aria-label": t("scan") });
    const scanButton = el("button", { type: "button", id: "scan-code" }, t("scan"));
    scanButton.addEventListener("click", async () => {
      if (stopCamera) {
        stopCamera();
        stopCamera = null;
        video.hidden = true;
        scanButton.textContent = t("scan");
        return;
      }
      try {
        video.hidden = false;
        scanButton.textContent = t("stop_scan");
        stopCamera = await citypay.scanCamera(video, (found) => {
          const digits = found.data.replace(/\D/g, "");
          if (digits.length !== 18) return false;
          code.value = digits;
          video.hidden = true;
          scanButton.textContent = t("scan");
          stopCamera = null;
          return true;
        });
      } catch (error) {
        video.hidden = true;
        scanButton.textContent = t("scan");
        announce(t("camera_failed"), "bad");
      }
    });
    const charge = async (event) => {
      event.preventDefault();
      const fen = parseYuan(amount.value);
      if (fen === null) return announce(t("bad_amount"), "bad");
      const digits = code.value.replace(/\s/g, "");
      if (!/^\d{18}$/.test(digits)) return announce(t("bad_code"), "bad");
      try {
        const trade = await api("POST", "/v1/till/code-payments", { out_trade_no: orderNo(), amount: { amount: fen, currency: "CNY" }, subject: t("default_subject"), auth_code: digits });
        announce(t("paid", money(trade.amount)), "good");
        code.value = "";
        refreshShift();
      } catch (error) {
        fail(error);
      }
    };
    return el(
      "section",
      { className: "card", "aria-labelledby": "customer-code-title" },
      el("h2", { id: "customer-code-title" }, t("customer_code")),
      el(
        "form",
        { onsubmit: charge },
        el("label", { for: "code-amount" }, t("amount")),
        amount,
        el("label", { for: "customer-code" }, t("code")),
        code,
        el("div", { className: "row" }, el("button", { type: "submit", className: "primary", id: "charge-code" }, t("charge")), scanButton),
      ),
      video,
    );
  }

  function shift() {
    return el(
      "section",
      { className: "card", "aria-labelledby": "shift-title" },
      el("div", { className: "row" }, el("h2", { id: "shift-title" }, t("shift")), el("button", { type: "button", onclick: refreshShift }, t("refresh"))),
      el("div", { id: "shift" }),
      el("div", { id: "refund-form" }),
    );
  }

  const methods = { qr: "method_qr", payment_code: "method_payment_code", cash: "method_cash" };
  const statuses = { WAIT_BUYER_PAY: "status_waiting", TRADE_SUCCESS: "status_paid", TRADE_CLOSED: "status_closed", TRADE_FINISHED: "status_finished" };

  async function refreshShift() {
    const holder = document.getElementById("shift");
    if (!holder) return;
    try {
      const day = await api("GET", "/v1/till/shift");
      const totals = el(
        "p",
        {},
        t("taken_electronic") + " " + money(day.taken_electronically) + " · " + t("taken_cash") + " " + money(day.taken_in_cash),
      );
      if (day.trades.length === 0) return holder.replaceChildren(totals, el("p", { className: "muted" }, t("no_trades")));
      const rows = day.trades.map((trade) =>
        el(
          "tr",
          { "data-order": trade.out_trade_no },
          el("td", {}, new Date(trade.created_at * 1000).toLocaleTimeString(i18n.lang === "zh" ? "zh-CN" : "en-GB")),
          el("td", {}, trade.out_trade_no),
          el("td", {}, t(methods[trade.method] || trade.method)),
          el("td", { className: "amount" }, money(trade.amount)),
          el("td", { className: "amount" }, money(trade.refunded)),
          el("td", {}, t(statuses[trade.status] || trade.status)),
          el(
            "td",
            {},
            trade.status === "TRADE_SUCCESS"
              ? el("button", { type: "button", "aria-label": t("refund") + " " + trade.out_trade_no, onclick: () => refundForm(trade) }, t("refund"))
              : "",
          ),
        ),
      );
      const head = el(
        "tr",
        {},
        el("th", { scope: "col" }, t("time")),
        el("th", { scope: "col" }, t("order")),
        el("th", { scope: "col" }, t("method")),
        el("th", { scope: "col", className: "amount" }, t("amount")),
        el("th", { scope: "col", className: "amount" }, t("refunded")),
        el("th", { scope: "col" }, t("status")),
        el("th", { scope: "col" }, el("span", { className: "visually-hidden" }, t("refund"))),
      );
      holder.replaceChildren(totals, el("table", {}, el("thead", {}, head), el("tbody", {}, rows)));
    } catch (error) {
      fail(error);
    }
  }

  function refundForm(trade) {
    const amount = el("input", { id: "refund-amount", inputmode: "decimal", required: true, value: yuan(trade.amount.amount - trade.refunded.amount).replace(/,/g, "") });
    const requestNo = "R" + newKey().replace(/-/g, "").slice(0, 20);
    const form = el(
      "form",
      {
        onsubmit: async (event) => {
          event.preventDefault();
          const fen = parseYuan(amount.value);
          if (fen === null) return announce(t("bad_amount"), "bad");
          try {
            const done = await api("POST", "/v1/till/trades/" + encodeURIComponent(trade.out_trade_no) + "/refunds", {
              out_request_no: requestNo,
              amount: { amount: fen, currency: "CNY" },
            });
            announce(t("refund_done", money(done.refund.amount)), "good");
            document.getElementById("refund-form").replaceChildren();
            refreshShift();
          } catch (error) {
            fail(error);
          }
        },
      },
      el("h3", {}, t("refund_of", trade.out_trade_no)),
      el("label", { for: "refund-amount" }, t("refund_amount")),
      amount,
      el("button", { type: "submit", className: "danger", id: "do-refund" }, t("do_refund")),
    );
    document.getElementById("refund-form").replaceChildren(form);
    amount.focus();
  }

  function settlement() {
    const yesterday = new Date(Date.now() - 86400000).toISOString().slice(0, 10);
    const date = el("input", { id: "settlement-date", type: "date", value: yesterday, required: true });
    const link = el("p", {});
    return el(
      "section",
      { className: "card", "aria-labelledby": "settlement-title" },
      el("h2", { id: "settlement-title" }, t("settlement")),
      el(
        "form",
        {
          onsubmit: async (event) => {
            event.preventDefault();
            try {
              const csv = await api("GET", "/v1/till/settlement-files/" + date.value);
              const url = URL.createObjectURL(new Blob([csv], { type: "text/csv" }));
              const name = "settlement-" + date.value + ".csv";
              link.replaceChildren(el("a", { href: url, download: name, id: "settlement-link" }, name));
            } catch (error) {
              fail(error);
            }
          },
        },
        el("label", { for: "settlement-date" }, t("date")),
        date,
        el("button", { type: "submit" }, t("download")),
      ),
      link,
    );
  }

  document.getElementById("language").addEventListener("click", () => {
    i18n.set(i18n.lang === "zh" ? "en" : "zh");
    header();
    if (me) showTill();
    else showSignIn();
  });
  start();
})();
