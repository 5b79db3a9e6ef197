"""A merchant's code on Alipay's own Python SDK, alipay-sdk-python 3.7.1411 (PyPI; import name
`alipay.aop.api`), one operation a run.

The gateway test runs it with target/gateway-sdks/official/bin/python, writes one JSON object on
its stdin ({"gateway", "app_id", "app_private_key" (PKCS#1: the SDK loads nothing else),
"platform_public_key", "op", ...}) and reads one JSON line from its stdout:
  op "call": {"method", "biz", "notify_url"?} -> {"ok": true, "response": {...}}: the fields of
      the method's AlipayTrade*Response after parse_response_content (code, msg, sub_code,
      sub_msg and the method's own; unset ones left out), or {"ok": false, "error": "<exception
      class>", "message": "..."} when execute() raised (ResponseException for a bad or missing
      signature, TypeError for an HTTP status other than 200);
  op "verify_notification": {"form": "<raw form body>"} -> {"ok": true, "verified": bool,
      "fields": {...}}.
The method names its classes: alipay.trade.fastpay.refund.query is
AlipayTradeFastpayRefundQuery{Request,Model,Response}; a method without them, or a biz field
its model lacks, answers {"ok": false, "error": "Unsupported"}. The SDK connects to port 80
whatever port the URL names (a bug), so the gateway must listen on 127.0.0.1:80.
"""

import importlib
import json
import sys
from urllib.parse import parse_qs

from alipay.aop.api.AlipayClientConfig import AlipayClientConfig
from alipay.aop.api.DefaultAlipayClient import DefaultAlipayClient
from alipay.aop.api.util.SignatureUtils import get_sign_content, verify_with_rsa


def sdk_class(kind, name):
    package = {"Request": "request", "Model": "domain", "Response": "response"}[kind]
    try:
        module = importlib.import_module("alipay.aop.api.%s.%s" % (package, name + kind))
    except ImportError:
        return None
    return getattr(module, name + kind, None)


def plain(value):
    if hasattr(value, "to_alipay_dict"):
        return value.to_alipay_dict()
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value


def call(config, args):
    name = "".join(part[:1].upper() + part[1:] for part in args["method"].split("."))
    request_class, model_class, response_class = (
        sdk_class(kind, name) for kind in ("Request", "Model", "Response"))
    if not (request_class and model_class and response_class):
        return {"ok": False, "error": "Unsupported", "message": "the SDK has no %sRequest" % name}
    model = model_class()
    for key, value in args["biz"].items():
        if not isinstance(getattr(model_class, key, None), property):
            return {"ok": False, "error": "Unsupported", "message": "%sModel has no %s" % (name, key)}
        setattr(model, key, value)
    request = request_class(biz_model=model)
    if args.get("notify_url"):
        request.notify_url = args["notify_url"]
    try:
        text = DefaultAlipayClient(config).execute(request)
    except Exception as e:
        return {"ok": False, "error": type(e).__name__, "message": str(e)}
    response = response_class()
    response.parse_response_content(text)
    fields = {k.lstrip("_"): plain(v) for k, v in vars(response).items()}
    return {"ok": True, "response": {k: v for k, v in fields.items() if v is not None and k != "body"}}


def verify_notification(config, args):
    # What merchants write (the SDK ships no helper): drop sign and sign_type, sort, verify.
    fields = {k: v[0] for k, v in parse_qs(args["form"], keep_blank_values=True).items()}
    data = dict(fields)
    sign = data.pop("sign", None)
    data.pop("sign_type", None)
    try:
        content = get_sign_content(data).encode("utf-8")
        verified = sign is not None and verify_with_rsa(config.alipay_public_key, content, sign)
    except Exception as e:  # python-rsa raises VerificationError on a mismatch
        if type(e).__name__ != "VerificationError":
            return {"ok": False, "error": type(e).__name__, "message": str(e)}
        verified = False
    return {"ok": True, "verified": verified, "fields": fields}


def main():
    args = json.load(sys.stdin)
    config = AlipayClientConfig()
    config.server_url = args["gateway"]
    config.app_id = args["app_id"]
    config.app_private_key = args["app_private_key"]
    config.alipay_public_key = args["platform_public_key"]
    config.sign_type = "RSA2"
    if args["op"] == "call":
        return call(config, args)
    if args["op"] == "verify_notification":
        return verify_notification(config, args)
    raise SystemExit("unknown op: " + args["op"])


if __name__ == "__main__":
    print(json.dumps(main(), ensure_ascii=False))
