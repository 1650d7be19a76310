// The review studio in a real headless Chromium, driven by playwright-core.
//
// Run by tests/tests/studio.rs, which starts Redis, the sandbox, a worker and `dramaq-studio`,
// enqueues a `review: scenes` season and passes:
//   STUDIO_URL, SEASON, SHOTS (screenshot folder), CHROMIUM (executable).
// Every step waits for what a person would wait for (a take stored, an episode assembled) with
// a deadline, and fails with what it saw. Screenshots of each page go to SHOTS.
import { chromium } from "playwright-core";
import assert from "node:assert/strict";

const BASE = process.env.STUDIO_URL;
const SEASON = process.env.SEASON;
const SHOTS = process.env.SHOTS;
const DEADLINE_MS = 60_000;

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: [
    "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
  ],
});
const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
page.setDefaultTimeout(20_000);
const T0 = Date.now();
const shot = (name) => {
  console.log(`${((Date.now() - T0) / 1000).toFixed(1)} s: ${name}`);
  return page.screenshot({ path: `${SHOTS}/${name}.png`, fullPage: true });
};

async function until(what, fn, ms = DEADLINE_MS) {
  const end = Date.now() + ms;
  let last;
  while (Date.now() < end) {
    try {
      last = await fn();
      if (last) return last;
    } catch (e) {
      last = e.message;
    }
    await new Promise((r) => setTimeout(r, 300));
  }
  throw new Error(`timed out waiting for ${what}; last seen: ${JSON.stringify(last)}`);
}

async function api(path, body) {
  return page.evaluate(async ([path, body]) => {
    const csrf = document.querySelector('meta[name="csrf-token"]').content;
    const r = await fetch(path, body === undefined ? {} : {
      method: "POST",
      headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf },
      body: JSON.stringify(body),
    });
    return { status: r.status, body: await r.json() };
  }, [path, body]);
}

const sceneApi = (scene) => `/api/seasons/${SEASON}/scenes/${scene}`;
async function takeState(scene, n) {
  const r = await api(sceneApi(scene));
  const t = r.body.takes && r.body.takes.find((t) => t.n === n);
  return t && t.record ? t.record.state : null;
}

// 1. Seasons: the running season is listed, live.
await page.goto(`${BASE}/`);
await page.waitForSelector(`tr[data-season="${SEASON}"]`);
await until("the seasons table to get a live update", async () =>
  (await page.getAttribute("#seasons", "data-updated")) !== null);

// 2. Season: every scene card with its poster, once the first episode's scenes are stored.
await until("ep01's scenes to be stored", async () =>
  (await takeState("ep01/sc01", 1)) === "stored" && (await takeState("ep01/sc02", 1)) === "stored");
await page.goto(`${BASE}/`);
await shot("seasons");
await page.goto(`${BASE}/seasons/${SEASON}`);
const cards = page.locator('[data-testid="scene-card"]');
assert.equal(await cards.count(), 4, "4 scene cards on the season page");
for (let i = 0; i < 4; i++) {
  assert.equal(await cards.nth(i).locator(".poster").count(), 1, `card ${i} has a poster`);
}
assert.ok(await page.locator('[data-testid="characters"] figure').count() >= 1, "character strip");
await shot("season-running");

// 3. Scene: the clip plays (HTTP Range from the studio's media route).
await page.goto(`${BASE}/seasons/${SEASON}/scenes/ep01/sc01`);
const ready = await until("the clip to play", () => page.evaluate(async () => {
  const v = document.getElementById("main-player");
  if (!v) return false;
  v.muted = true;
  try { await v.play(); } catch (e) { return `play(): ${e.message}`; }
  return v.readyState >= 2 ? v.readyState : false;
}));
assert.ok(ready >= 2, `video readyState ${ready}`);
assert.match(await page.textContent('[data-testid="prompt"]'), /harbour/);
await page.evaluate(() => document.getElementById("main-player").pause());
await shot("scene");

// 4. Re-roll with a note: take 2 arrives, renders, and becomes selectable.
await page.fill('form.reroll input[name="note"]', "warmer light");
await Promise.all([page.waitForNavigation(), page.click('button[data-action="reroll"]')]);
await page.waitForSelector('.take[data-take="2"]');
// A second click on the same (stale) form pays nothing: same take number, same id.
const again = await api(`${sceneApi("ep01/sc01")}/reroll`, { take: 2, note: "warmer light" });
assert.equal(again.status, 200, JSON.stringify(again.body));
assert.equal(again.body.new, false, "the repeated re-roll created nothing new");
await until("take 2 to be stored", async () => (await takeState("ep01/sc01", 2)) === "stored");
await page.reload();
await page.waitForSelector('.take[data-take="2"][data-state="stored"]');
assert.equal(await page.locator('.take[data-take="1"] button[data-action="select"]').count(), 1,
  "take 1 can be selected again");
await Promise.all([page.waitForNavigation(),
  page.click('.take[data-take="1"] button[data-action="select"]')]);
await page.waitForSelector('.take[data-take="2"] button[data-action="select"]');
await shot("scene-takes");

// 5. Approve every scene of ep01 (review: scenes): its assembly starts and the master arrives.
await page.goto(`${BASE}/seasons/${SEASON}/episodes/ep01`);
await page.waitForSelector('[data-testid="awaiting"]');
await page.goto(`${BASE}/seasons/${SEASON}/scenes/ep01/sc01`);
await Promise.all([page.waitForNavigation(),
  page.click('.take[data-take="2"] button[data-action="approve"]')]);
await page.goto(`${BASE}/seasons/${SEASON}/scenes/ep01/sc02`);
await Promise.all([page.waitForNavigation(),
  page.click('.take[data-take="1"] button[data-action="approve"]')]);
await page.goto(`${BASE}/seasons/${SEASON}/episodes/ep01`);
await until("ep01's master to be assembled", async () => {
  await page.reload();
  return (await page.getAttribute('[data-testid="assembly"]', "data-state")) === "stored"
    && (await page.getAttribute('[data-testid="master"]', "data-state")) === "stored";
});
const ep = await api(`/api/seasons/${SEASON}/episodes/ep01`);
assert.equal(ep.body.assembly.status, "queued");
await shot("episode");
// Assembly took a poster frame of every scene: the season page's ep01 cards show them.
await page.goto(`${BASE}/seasons/${SEASON}`);
const posters = await until("ep01's poster frames on the season page", () => page.evaluate(() => {
  const imgs = [...document.querySelectorAll('[data-episode="ep01"] img.poster')];
  return imgs.length === 2 && imgs.every((i) => i.complete && i.naturalWidth > 0) ? imgs.length : false;
}));
assert.equal(posters, 2);
await shot("season");

// 6. Dead letters: preview the requeue of the rejected scene, then apply exactly that.
await page.goto(`${BASE}/dead?class=content_policy`);
await until("the rejected scene in the dead letters", async () => {
  await page.reload();
  return (await page.locator("table.dead tbody tr").count()) === 1;
});
const deadId = await page.getAttribute("table.dead tbody tr", "data-id");
const before = (await api(`/api/dead?class=content_policy`)).body.tasks[0].errors;
await Promise.all([page.waitForNavigation(),
  page.click('button[data-action="preview-requeue"]')]);
assert.equal(await page.locator('[data-testid="preview"] tr').count(), 1, "preview lists one task");
assert.equal(await page.getAttribute('[data-testid="preview"] tr', "data-id"), deadId);
await shot("dead-preview");
await Promise.all([page.waitForNavigation(), page.click('button[data-action="apply"]')]);
await until("the requeued task to be attempted again", async () => {
  const d = await api(`/api/dead?class=content_policy`);
  const t = d.body.tasks.find((t) => t.id === deadId);
  return t && t.errors > before;
});
await page.goto(`${BASE}/dead`);
await shot("dead");

// 7. Accounts: pause the video account; its claims stop; resume; the take renders.
await page.goto(`${BASE}/accounts`);
const row = 'tr[data-account="sandbox-sora"]';
await page.fill(`${row} input[name="reason"]`, "studio test");
await Promise.all([page.waitForNavigation(), page.click(`${row} button[data-action="pause"]`)]);
assert.match(await page.textContent(`${row} [data-field="status"]`), /paused: studio test/);
await shot("accounts");
const rr = await api(`${sceneApi("ep01/sc02")}/reroll`, { take: 2 });
assert.equal(rr.status, 200, JSON.stringify(rr.body));
for (let i = 0; i < 8; i++) {
  await new Promise((r) => setTimeout(r, 500));
  assert.equal(await takeState("ep01/sc02", 2), "ready", "no claim while the account is paused");
}
await Promise.all([page.waitForNavigation(), page.click(`${row} button[data-action="resume"]`)]);
await until("the paused account's take to render after resume", async () =>
  (await takeState("ep01/sc02", 2)) === "stored");

await browser.close();
console.log("studio browser scenario passed");
