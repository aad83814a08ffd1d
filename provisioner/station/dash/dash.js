/* keyline station dashboard: renders /events (server-sent events, one JSON state per event).
 * Everything from the station (device serials, error texts) is set with textContent: a hostile
 * device cannot inject markup. Actions are POSTs with the operator's Basic credentials, kept in
 * this page's memory only, and the X-Keyline-Dashboard header (a cross-site form cannot send
 * it). */
'use strict';
(function () {
  const $ = (id) => document.getElementById(id);
  let cred = null;          /* "Basic ..." once an operator logged in */
  let pending = null;       /* an action waiting for the log-in */
  let state = null, stateAt = 0;

  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }
  function secs(ms) {
    if (ms < 60000) return (ms / 1000).toFixed(1) + ' s';
    const m = Math.floor(ms / 60000), s = Math.floor((ms % 60000) / 1000);
    return m + ' min ' + s + ' s';
  }
  function clock(t) {
    const d = new Date(t);
    return d.toLocaleTimeString([], {hour: '2-digit', minute: '2-digit', second: '2-digit'});
  }

  function renderCounters(c) {
    $('c-provisioned').textContent = c.provisioned;
    $('c-failed').textContent = c.failed;
    $('c-rate').textContent = c.per_hour < 10 ? c.per_hour.toFixed(1) : Math.round(c.per_hour);
    $('c-fpy').textContent = c.first_pass_yield === null ? '-' :
      (100 * c.first_pass_yield).toFixed(1) + ' %';
  }

  function renderOrder(o, canAct) {
    const box = $('order');
    const stop = o && o.state !== 'open';
    box.classList.toggle('stop', !!stop);
    $('o-id').textContent = o ? o.id : 'none';
    $('o-state').textContent = o ? o.state : 'no order';
    $('o-state').className = 'badge ' + (o ? o.state : '');
    $('o-model').textContent = o ? 'model ' + o.model : '';
    $('o-expires').textContent = o && o.expires ? 'expires ' + o.expires : '';
    const pct = o && o.count ? Math.min(100, 100 * o.issued / o.count) : 0;
    $('o-bar').style.width = pct + '%';
    $('o-progress').textContent = !o ? 'this station works without a production order'
      : o.state === 'missing' ? 'no production order for this station'
      : o.issued + ' of ' + o.count + ' issued, ' + o.remaining + ' remaining';
    $('o-why').textContent = o && o.why ? o.why : '';
    $('o-close').classList.toggle('hidden', !(o && o.state === 'open' && canAct));
    const b = $('banner');
    b.textContent = o && o.why ? o.why : '';
    b.classList.toggle('hidden', !(o && o.why));
  }

  function tile(f, phases, canAct) {
    const last = f.last;
    let cls = 'tile ' + f.state;
    if (last && f.state !== 'working') cls += last.outcome === 'ok' ? ' ok' : ' failed';
    const t = el('article', cls);
    t.dataset.fixture = f.name;
    t.dataset.state = f.state;
    const top = el('div', 'top');
    top.append(el('span', 'name', f.name), el('span', 'badge ' + f.state, f.state));
    t.append(top);
    const shown = f.state === 'working' ? f.serial : f.state === 'done' && last ? last.serial : '';
    t.append(el('div', 'serial', shown || '-'));
    /* the phases: done, current (working) or where the last device failed */
    let cur = f.phase_index, curCls = 'cur';
    if (cur < 0 && last && f.state === 'done') {
      cur = last.outcome === 'ok' ? phases.length : phases.indexOf(last.phase);
      curCls = 'fail';
    }
    const steps = el('div', 'steps');
    phases.forEach((p, i) => {
      const s = el('i', cur < 0 ? '' : i < cur ? 'done' : i === cur ? curCls : '');
      s.title = p;
      steps.append(s);
    });
    t.append(steps);
    const ph = el('div', 'phase');
    if (f.state === 'working') {
      const elapsed = f.elapsed_ms + (Date.now() - stateAt);
      ph.append(el('b', 'ph', f.phase), document.createTextNode(' ' + (f.step || '') + ' · '),
        el('span', 'elapsed', secs(elapsed)));
    } else {
      ph.textContent = f.status;
    }
    t.append(ph);
    if (last) {
      const l = el('div', 'last ' + last.outcome);
      l.textContent = last.outcome === 'ok'
        ? 'OK ' + last.serial + ': ' + last.action + ', certificate ' + last.cert_serial +
          ' in ' + secs(last.total_ms)
        : 'FAILED ' + last.serial + ' at ' + last.phase + ': ' + last.error;
      t.append(l);
      if (last.hint) t.append(el('div', 'hint', 'What to do: ' + last.hint));
    }
    const foot = el('div', 'foot');
    foot.append(el('span', 'counts', f.ok + ' ok · ' + f.failed + ' failed'));
    if (canAct && f.state !== 'gone') {
      const b = el('button', 'act', f.paused ? 'Resume' : 'Pause');
      b.type = 'button';
      b.addEventListener('click', () =>
        act('/fixture/' + encodeURIComponent(f.name) + (f.paused ? '/resume' : '/pause')));
      foot.append(b);
    }
    t.append(foot);
    return t;
  }

  function renderFailures(list) {
    const ol = $('failures');
    ol.replaceChildren();
    if (!list.length) { ol.append(el('li', 'muted none', 'none')); return; }
    for (const f of list) {
      const li = el('li', 'failure');
      li.dataset.serial = f.serial;
      li.append(el('div', 'what', clock(f.time) + ' · ' + f.fixture + ' · ' + f.serial +
        ' · at ' + f.phase));
      li.append(el('div', 'err', f.error));
      li.append(el('div', 'hint', 'What to do: ' + f.hint));
      ol.append(li);
    }
  }

  function render() {
    if (!state) return;
    const s = state;
    $('station-id').textContent = s.station.id || s.station.host;
    $('station-info').textContent = s.station.host + ' · profile ' + s.station.profile +
      ' · ' + s.station.mode + ' mode';
    renderCounters(s.counters);
    renderOrder(s.order, s.actions);
    const tiles = $('tiles');
    tiles.replaceChildren(...s.fixtures.map((f) => tile(f, s.phases, s.actions)));
    renderFailures(s.failures);
    document.body.dataset.version = s.version;
  }

  function connect() {
    const es = new EventSource('/events');
    es.addEventListener('state', (ev) => {
      state = JSON.parse(ev.data);
      stateAt = Date.now();
      $('link').textContent = state.stopping ? 'station stopping' : 'live';
      $('link').className = 'link ' + (state.stopping ? 'down' : 'up');
      render();
    });
    es.onerror = () => { $('link').textContent = 'reconnecting'; $('link').className = 'link down'; };
  }

  async function act(path) {
    if (!cred) { pending = path; showLogin('Log in to ' + path.split('?')[0].split('/').pop() + '.'); return; }
    const r = await fetch(path, {method: 'POST', credentials: 'omit',
      headers: {'Authorization': cred, 'X-Keyline-Dashboard': '1'}});
    if (r.status === 401) { cred = null; pending = path; showLogin('Wrong operator or password.'); return; }
    const txt = await r.text();
    if (!r.ok) alert(txt);
  }

  function showLogin(msg) {
    $('login').classList.remove('hidden');
    $('login-msg').textContent = msg;
    $('login-user').focus();
  }
  $('login-btn').addEventListener('click', () => {
    if (cred) { cred = null; $('login-btn').textContent = 'Operator log-in'; render(); return; }
    showLogin('Actions (pause a fixture, close the order) need an operator password.');
  });
  $('login-cancel').addEventListener('click', () => { pending = null; $('login').classList.add('hidden'); });
  $('login').addEventListener('submit', (ev) => {
    ev.preventDefault();
    const u = $('login-user').value, p = $('login-pass').value;
    const bytes = new TextEncoder().encode(u + ':' + p);
    cred = 'Basic ' + btoa(String.fromCharCode(...bytes));
    $('login-pass').value = '';
    $('login').classList.add('hidden');
    $('login-btn').textContent = 'Log out ' + u;
    if (pending) { const p2 = pending; pending = null; act(p2); }
  });
  $('o-close').addEventListener('click', () => {
    const id = state && state.order ? state.order.id : null;
    if (id && confirm('Close production order ' + id +
        '? No further device can be provisioned under it.')) act('/order/close?id=' + encodeURIComponent(id));
  });
  setInterval(() => {            /* the elapsed time ticks between events */
    if (state && state.fixtures.some((f) => f.state === 'working')) render();
  }, 500);
  connect();
})();
