// A merchant's code on Alipay's Node SDK, npm alipay-sdk 4.14.0, one operation a run.
//
// The gateway test runs `node node_client.mjs` with CITYPAY_GATEWAY_SDKS set to the folder
// scripts/gateway-sdks.sh fills (target/gateway-sdks when unset): the SDK is loaded from
// $CITYPAY_GATEWAY_SDKS/node/node_modules through createRequire (an ES module ignores
// NODE_PATH). It writes one JSON object on stdin ({"gateway", "app_id", "app_private_key"
// (PKCS#1), "platform_public_key", "op", ...}) and reads one JSON line from stdout:
//   op "call": {"method", "biz", "notify_url"?} -> {"ok": true, "response": {...}}: what
//       exec(..., {validateSign: true}) resolved to, camelCased by the SDK (subCode, tradeNo,
//       qrCode...), or {"ok": false, "error": "<error class>", "message": "..."} when it threw
//       (AlipayRequestError for a bad signature or HTTP status, TypeError for a missing sign);
//   op "verify_notification": {"form": "<raw form body>"} -> {"ok": true, "verified": bool,
//       "fields": {...}}, verified with checkNotifySignV2 (values as received, no decoding).
import { createRequire } from 'node:module';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const sdks = process.env.CITYPAY_GATEWAY_SDKS || join(here, '../../../../target/gateway-sdks');
const require = createRequire(join(sdks, 'node', 'package.json'));
const { AlipaySdk } = require('alipay-sdk');

function readStdin() {
  return new Promise((resolve, reject) => {
    let text = '';
    process.stdin.setEncoding('utf8');
    process.stdin.on('data', chunk => { text += chunk; });
    process.stdin.on('end', () => resolve(text));
    process.stdin.on('error', reject);
  });
}

function failure(err) {
  const error = (err && (err.name || err.constructor?.name)) || typeof err;
  return { ok: false, error, message: String(err?.message ?? err) };
}

async function main() {
  const args = JSON.parse(await readStdin());
  const sdk = new AlipaySdk({
    appId: args.app_id,
    privateKey: args.app_private_key,
    alipayPublicKey: args.platform_public_key,
    gateway: args.gateway,
    signType: 'RSA2',
    keyType: 'PKCS1',
  });

  if (args.op === 'call') {
    const params = { bizContent: args.biz };
    if (args.notify_url) params.notifyUrl = args.notify_url;
    try {
      const response = await sdk.exec(args.method, params, { validateSign: true });
      return { ok: true, response };
    } catch (err) {
      return failure(err);
    }
  }

  if (args.op === 'verify_notification') {
    const fields = Object.fromEntries(new URLSearchParams(args.form));
    try {
      return { ok: true, verified: sdk.checkNotifySignV2({ ...fields }), fields };
    } catch (err) {
      return failure(err);
    }
  }

  throw new Error(`unknown op: ${args.op}`);
}

process.stdout.write(JSON.stringify(await main()) + '\n');
