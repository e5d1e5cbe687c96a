// lockstep timeline: draws one run (or one history) from the JSON blob in
// <script id="timeline-data">, built by src/sim/timeline.rs. Hand-written, no library, loads
// nothing: the page must work from a file with no network.
//
// What it draws, on one canvas, against time (x):
// - a lane per server (role bands with terms, crash and pause spans), per client (operations
//   as bars coloured by result) and per other endpoint (rogue clients);
// - messages as arrows between lanes, coloured by kind, styled by fate; when too many are in
//   view to draw one by one, as counts per 3-pixel bucket per lane (never thousands of paths);
// - faults as shaded spans, markers (phases, one-off faults) as dashed lines;
// - the failing step: a red line, the operation(s) involved outlined, and for a
//   linearizability failure the smallest failing window shaded, with the furthest partial
//   linearization listed above the chart.
//
// Interaction: wheel zooms around the pointer, drag pans, buttons and keys (+ - 0 f, arrows)
// zoom, fit and jump to the failure; filters hide lanes, message kinds and fates, and show
// one lock's operations. A click shows an item's details below the chart. The page opens on
// the failing step, or on the whole run; #view=FROM,TO in the URL (nanoseconds) opens it there.
//
// For tests and measurements it leaves attributes on <html>: data-timeline-ready,
// data-lanes, data-first-render-ms, data-render-mode, data-render-count, and with
// #selftest in the URL, data-selftest (it then zooms, pans and filters by itself and records
// data-selftest-renders and data-selftest-max-render-ms).
(function () {
  'use strict';

  var root = document.documentElement;
  var data = JSON.parse(document.getElementById('timeline-data').textContent);

  // ----- constants -----
  /** The strip above the lanes: tick labels, then marker labels, then cluster-wide faults. */
  var AXIS_HEIGHT = 46;
  var TICK_LABEL_Y = 12;
  var MARKER_LABEL_Y = 27;
  var GLOBAL_FAULT_TOP = 31;
  var SERVER_HEIGHT = 36;
  var OTHER_HEIGHT = 24;
  var OP_ROW_HEIGHT = 15;
  var OP_BAR_HEIGHT = 11;
  /** Above this many messages in view, they are drawn as counts per bucket. */
  var MESSAGES_DETAIL_MAX = 2500;
  var BUCKET_WIDTH_PX = 3;
  /** The narrowest view: 1 microsecond. */
  var SPAN_MIN_NS = 1000;
  var ZOOM_STEP = 1.6;

  var ROLE_COLORS = {
    leader: '#2e7d32',
    candidate: '#f9a825',
    pre_candidate: '#fbc02d',
    follower: '#90a4ae',
    down: '#37474f',
    up: '#cfd8dc'
  };
  var RESULT_COLORS = {
    granted: '#43a047',
    held_by: '#fb8c00',
    released: '#1e88e5',
    not_owner: '#e65100',
    free: '#26a69a',
    owner: '#00897b',
    unknown: '#b0bec5',
    expired: '#8d6e63',
    timed_out: '#9e9d24',
    cancelled: '#78909c',
    not_waiting: '#bdbdbd',
    permits_mismatch: '#d81b60',
    shared: '#7cb342'
  };
  var KIND_PALETTE = [
    '#3f6fb5', '#7b4fb3', '#2a9d8f', '#b5651d', '#c2185b', '#5d7d2a', '#6d4c41',
    '#00838f', '#8e6c00', '#455a64', '#ad1457', '#1565c0', '#558b2f', '#4e342e'
  ];
  var FATE_STYLES = {
    delivered: { color: null, dash: [], mark: 'arrow' },
    duplicated: { color: null, dash: [], mark: 'double' },
    dropped: { color: '#d32f2f', dash: [], mark: 'cross' },
    blocked: { color: '#ef6c00', dash: [], mark: 'bar' },
    lost_partitioned: { color: '#d32f2f', dash: [4, 3], mark: 'cross' },
    lost_crashed: { color: '#6d1b1b', dash: [4, 3], mark: 'cross' },
    in_flight: { color: '#90a4ae', dash: [2, 3], mark: 'none' }
  };
  var FAULT_COLORS = {
    crash: 'rgba(38, 50, 56, 0.55)',
    pause: 'rgba(94, 53, 177, 0.30)',
    partition: 'rgba(229, 57, 53, 0.10)',
    isolate: 'rgba(245, 124, 0, 0.22)',
    cut: 'rgba(245, 124, 0, 0.18)'
  };

  // ----- the data, as typed columns -----
  var lanes = data.lanes;
  var messageCount = data.messages.length;
  var msgSend = new Float64Array(messageCount);
  var msgArrive = new Float64Array(messageCount);
  var msgFrom = new Int32Array(messageCount);
  var msgTo = new Int32Array(messageCount);
  var msgKind = new Int32Array(messageCount);
  var msgFate = new Int32Array(messageCount);
  var flightMaxNs = 0;
  data.messages.forEach(function (row, index) {
    msgSend[index] = row[0];
    msgArrive[index] = row[1] === null ? NaN : row[1];
    msgFrom[index] = row[2];
    msgTo[index] = row[3];
    msgKind[index] = row[4];
    msgFate[index] = row[5];
    if (row[1] !== null && row[1] - row[0] > flightMaxNs) {
      flightMaxNs = row[1] - row[0];
    }
  });
  var ops = data.ops.map(function (row, id) {
    return {
      id: id, lane: row[0], kind: row[1], lock: row[2], call: row[3],
      ret: row[4], result: row[5], detail: row[6], row: row[7], until: row[8]
    };
  });
  /** Per lane: its operations' ids, in call order. */
  var opsByLane = lanes.map(function () { return []; });
  ops.forEach(function (op) { opsByLane[op.lane].push(op.id); });
  /** Per lane: [at, role, term] in time order. */
  var rolesByLane = lanes.map(function () { return []; });
  data.roles.forEach(function (row) { rolesByLane[row[1]].push([row[0], row[2], row[3]]); });

  var endNs = Math.max(data.end_ns, 1);
  var failure = data.failure;
  var window_ = data.window;
  var windowOps = {};
  if (window_) {
    window_.ops.forEach(function (id) { windowOps[id] = true; });
  }
  var failureOps = {};
  if (failure) {
    failure.related.forEach(function (id) { failureOps[id] = true; });
  }

  // ----- view state -----
  var view = { t0: 0, t1: endNs };
  var hiddenLanes = {};
  var hiddenKinds = {};
  var hiddenFates = {};
  var lockShown = -1;
  var selected = null;
  var layout = [];
  var laneIndexAtY = [];
  var plotWidth = 800;
  var plotHeight = 200;
  var drawnMessages = [];
  var renderCount = 0;
  var renderPending = false;
  var lastRenderMs = 0;

  // ----- DOM -----
  var app = document.getElementById('app');
  app.textContent = '';

  function element(tag, attributes, children) {
    var node = document.createElement(tag);
    Object.keys(attributes || {}).forEach(function (name) {
      if (name === 'text') {
        node.textContent = attributes[name];
      } else if (name === 'class') {
        node.className = attributes[name];
      } else {
        node.setAttribute(name, attributes[name]);
      }
    });
    (children || []).forEach(function (child) {
      node.appendChild(typeof child === 'string' ? document.createTextNode(child) : child);
    });
    return node;
  }

  function formatTime(ns) {
    var sign = ns < 0 ? '-' : '';
    var value = Math.abs(ns);
    if (value >= 1e9) { return sign + (value / 1e9).toFixed(6).replace(/0+$/, '').replace(/\.$/, '') + 's'; }
    if (value >= 1e6) { return sign + (value / 1e6).toFixed(3) + 'ms'; }
    if (value >= 1e3) { return sign + (value / 1e3).toFixed(3) + '\u00b5s'; }
    return sign + Math.round(value) + 'ns';
  }

  function opText(op) {
    return lanes[op.lane].name + ' ' + data.op_kinds[op.kind] + ' ' + data.locks[op.lock] +
      ' \u2192 ' + op.detail;
  }

  function opTimes(op) {
    return formatTime(op.call) + ' .. ' + (op.ret === null ? 'never' : formatTime(op.ret));
  }

  var header = element('header', { class: 'top' }, [
    element('h1', { text: data.title }),
    element('div', { class: 'subtitle', text: data.subtitle })
  ]);
  app.appendChild(header);
  app.appendChild(buildFailurePanel());

  var rangeText = element('span', { class: 'range' });
  var statusText = element('span', { class: 'status' });
  var toolbar = element('div', { class: 'toolbar' }, [
    button('\u2212', 'Zoom out (-)', function () { zoomBy(ZOOM_STEP, 0.5); }, 'zoom-out'),
    button('+', 'Zoom in (+)', function () { zoomBy(1 / ZOOM_STEP, 0.5); }, 'zoom-in'),
    button('Fit all', 'Show the whole run (0)', fitAll, 'fit-all'),
    button('\u2190', 'Pan left', function () { panBy(-0.25); }, 'pan-left'),
    button('\u2192', 'Pan right', function () { panBy(0.25); }, 'pan-right'),
    failure ? button('Failing step', 'Zoom to the failing step (f)', focusFailure, 'goto-failure') : null,
    rangeText,
    statusText
  ].filter(Boolean));
  app.appendChild(toolbar);
  app.appendChild(buildFilters());

  var gutter = element('div', { class: 'gutter', id: 'gutter' });
  var canvas = element('canvas', { id: 'timeline-canvas' });
  var failingStep = element('div', { class: 'failing-step', id: 'failing-step' });
  var plot = element('div', { class: 'plot', id: 'plot' }, [canvas, failingStep]);
  var chart = element('div', { class: 'chart', id: 'chart' }, [gutter, plot]);
  app.appendChild(chart);
  app.appendChild(buildLegend());
  var details = element('section', { id: 'details', text: 'Click an operation or a message for its details.' });
  app.appendChild(details);
  if (data.notes.length > 0) {
    app.appendChild(element('footer', { class: 'notes' }, [
      element('ul', {}, data.notes.map(function (note) { return element('li', { text: note }); }))
    ]));
  }
  var tooltip = element('div', { class: 'tooltip', id: 'tooltip' });
  document.body.appendChild(tooltip);
  var context = canvas.getContext('2d');

  if (failure) {
    failingStep.setAttribute('data-step-id', failure.step_id);
    failingStep.setAttribute('data-invariant', failure.invariant);
    failingStep.appendChild(element('span', { text: '\u2717 ' + failure.invariant }));
  }

  function button(label, title, action, id) {
    var node = element('button', { title: title, type: 'button', text: label });
    if (id) { node.id = id; }
    node.addEventListener('click', action);
    return node;
  }

  function buildFailurePanel() {
    if (!failure && data.undecided_locks.length > 0) {
      return element('section', { class: 'failure', id: 'verdict' }, [
        element('h2', { text: '? Unknown: no violation found, but the search stopped before deciding ' +
          data.undecided_locks.length + ' lock(s): ' + data.undecided_locks.slice(0, 10).join(', ') })
      ]);
    }
    if (!failure) {
      return element('section', { class: 'failure passed', id: 'verdict' }, [
        element('h2', { text: '\u2713 No violation: every checker held.' })
      ]);
    }
    var panel = element('section', { class: 'failure', id: 'verdict' }, [
      element('h2', { text: '\u2717 ' + failure.invariant + ' at ' + formatTime(failure.at_ns) }),
      element('pre', { text: failure.message })
    ]);
    if (window_) {
      panel.appendChild(element('h3', {
        text: 'Smallest window that cannot be linearized: lock \u201c' + window_.lock + '\u201d, ' +
          window_.ops.length + ' operations'
      }));
      var rows = window_.ops.map(function (id) {
        var op = ops[id];
        var row = element('tr', { 'data-op': String(id), class: id === window_.culprit ? 'culprit' : '' }, [
          element('td', { text: lanes[op.lane].name }),
          element('td', { text: data.op_kinds[op.kind] }),
          element('td', { text: formatTime(op.call) }),
          element('td', { text: op.ret === null ? 'never' : formatTime(op.ret) }),
          element('td', { text: op.detail + (id === window_.culprit ? '  \u2190 cannot be placed' : '') })
        ]);
        row.addEventListener('click', function () { focusOp(id); });
        return row;
      });
      panel.appendChild(element('table', { class: 'ops', id: 'window-ops' }, [
        element('tr', {}, ['client', 'op', 'call', 'return', 'result'].map(function (name) {
          return element('th', { text: name });
        }))
      ].concat(rows)));
      panel.appendChild(buildFurthest(window_.furthest));
      panel.appendChild(button('Show only lock \u201c' + window_.lock + '\u201d',
        'Hide the other locks\u2019 operations', function () {
          lockShown = data.locks.indexOf(window_.lock);
          lockSelect.value = String(lockShown);
          requestRender();
        }, 'only-window-lock'));
    }
    return panel;
  }

  function buildFurthest(furthest) {
    var box = element('div', { id: 'furthest' }, [
      element('h3', {
        text: 'Furthest partial linearization (' + furthest.steps.length +
          (furthest.steps.length === 1 ? ' operation' : ' operations') +
          ' placed, starting with the lock ' + furthest.start + ')'
      })
    ]);
    var list = element('ol', { class: 'linearization' }, furthest.steps.map(function (step) {
      var op = ops[step.op];
      var item = element('li', { 'data-op': String(step.op), class: step.required ? '' : 'assumed' }, [
        opText(op) + (step.required ? '' : ' (assumed to take effect)') + '  \u21d2  ',
        element('span', { class: 'state', text: step.after })
      ]);
      item.addEventListener('click', function () { focusOp(step.op); });
      return item;
    }));
    box.appendChild(list);
    var unplaced = furthest.unplaced.map(function (id) { return opText(ops[id]); });
    box.appendChild(element('div', {
      text: 'No order can go on with any of: ' + (unplaced.join('; ') || 'nothing') +
        (furthest.cut_short ? ' (the search ran out of budget: a longer one may exist)' : '')
    }));
    return box;
  }

  var lockSelect;
  function buildFilters() {
    var box = element('details', { class: 'filters', id: 'filters' }, [
      element('summary', { text: 'Filters: nodes, lock, message kinds and fates' })
    ]);
    box.appendChild(checkGroup('Nodes', lanes.map(function (lane, index) {
      return { label: lane.name, key: index, swatch: null };
    }), hiddenLanes, true, 'filter-nodes'));
    lockSelect = element('select', { id: 'filter-lock' }, [element('option', { value: '-1', text: 'every lock' })]
      .concat(data.locks.map(function (lock, index) {
        return element('option', { value: String(index), text: lock });
      })));
    lockSelect.addEventListener('change', function () {
      lockShown = Number(lockSelect.value);
      requestRender();
    });
    box.appendChild(element('div', { class: 'filter-group' }, [
      element('span', { class: 'name', text: 'Lock' }), lockSelect,
      element('span', { text: '  (operations; messages carry no lock)' })
    ]));
    box.appendChild(checkGroup('Message kinds', data.message_kinds.map(function (kind, index) {
      return { label: kind, key: index, swatch: kindColor(index) };
    }), hiddenKinds, false, 'filter-kinds'));
    box.appendChild(checkGroup('Fates', data.fates.map(function (fate, index) {
      return { label: fate, key: index, swatch: FATE_STYLES[fate] && FATE_STYLES[fate].color };
    }), hiddenFates, false, 'filter-fates'));
    return box;
  }

  function checkGroup(name, items, hidden, relayout, id) {
    var boxes = [];
    var group = element('div', { class: 'filter-group', id: id }, [element('span', { class: 'name', text: name })]);
    function changed() {
      if (relayout) { layoutLanes(); }
      requestRender();
    }
    group.appendChild(button('all', 'Show all', function () {
      boxes.forEach(function (input) { input.checked = true; delete hidden[input.value]; });
      changed();
    }));
    group.appendChild(button('none', 'Hide all', function () {
      boxes.forEach(function (input) { input.checked = false; hidden[input.value] = true; });
      changed();
    }));
    items.forEach(function (item) {
      var input = element('input', { type: 'checkbox', value: String(item.key) });
      input.checked = true;
      input.addEventListener('change', function () {
        if (input.checked) { delete hidden[item.key]; } else { hidden[item.key] = true; }
        changed();
      });
      boxes.push(input);
      var parts = [input];
      if (item.swatch) { parts.push(element('span', { class: 'swatch', style: 'background:' + item.swatch })); }
      parts.push(item.label);
      group.appendChild(element('label', {}, parts));
    });
    return group;
  }

  function buildLegend() {
    var items = [];
    Object.keys(ROLE_COLORS).forEach(function (role) {
      items.push(legendItem(ROLE_COLORS[role], role));
    });
    Object.keys(RESULT_COLORS).forEach(function (result) {
      items.push(legendItem(RESULT_COLORS[result], result));
    });
    items.push(legendItem(FAULT_COLORS.crash, 'crashed'));
    items.push(legendItem('rgba(229, 57, 53, 0.35)', 'partition'));
    items.push(legendItem(FAULT_COLORS.isolate, 'isolated / cut'));
    items.push(legendItem('#d32f2f', '\u00d7 dropped or lost'));
    items.push(legendItem('#ef6c00', '| blocked by a partition'));
    items.push(legendItem('#7b4fb3', '\u25cb duplicated'));
    return element('div', { class: 'legend' }, items);
  }

  function legendItem(color, label) {
    return element('span', { class: 'item' }, [
      element('span', { class: 'swatch', style: 'background:' + color }), label
    ]);
  }

  function kindColor(kind) {
    return KIND_PALETTE[kind % KIND_PALETTE.length];
  }

  // ----- layout -----
  function laneHeight(lane) {
    if (lane.kind === 'server') { return SERVER_HEIGHT; }
    if (lane.kind === 'client') { return 8 + Math.max(1, lane.rows) * OP_ROW_HEIGHT; }
    return OTHER_HEIGHT;
  }

  function layoutLanes() {
    layout = [];
    laneIndexAtY = [];
    var y = AXIS_HEIGHT;
    gutter.textContent = '';
    gutter.appendChild(element('div', { class: 'lane-label', style: 'top:0;height:' + AXIS_HEIGHT + 'px;border-top:none', text: 'time \u2192' }));
    lanes.forEach(function (lane, index) {
      if (hiddenLanes[index]) {
        layout[index] = null;
        return;
      }
      var height = laneHeight(lane);
      layout[index] = { top: y, height: height, center: y + height / 2 };
      laneIndexAtY.push(index);
      var label = element('div', {
        class: 'lane-label', 'data-lane': lane.name, 'data-kind': lane.kind,
        style: 'top:' + y + 'px;height:' + height + 'px', title: lane.kind + ' ' + lane.name
      }, [lane.name]);
      if (failure && failure.lane === index) { label.classList.add('failing'); }
      gutter.appendChild(label);
      y += height;
    });
    plotHeight = Math.max(y, AXIS_HEIGHT + 20);
    gutter.style.height = plotHeight + 'px';
    root.setAttribute('data-lanes', String(laneIndexAtY.length));
    resizeCanvas();
  }

  function resizeCanvas() {
    var ratio = window.devicePixelRatio || 1;
    plotWidth = Math.max(200, plot.clientWidth || 800);
    canvas.width = Math.round(plotWidth * ratio);
    canvas.height = Math.round(plotHeight * ratio);
    canvas.style.width = plotWidth + 'px';
    canvas.style.height = plotHeight + 'px';
    plot.style.height = plotHeight + 'px';
    context.setTransform(ratio, 0, 0, ratio, 0, 0);
  }

  // ----- coordinates -----
  function xOf(ns) {
    return (ns - view.t0) / (view.t1 - view.t0) * plotWidth;
  }

  function nsAt(x) {
    return view.t0 + x / plotWidth * (view.t1 - view.t0);
  }

  function lowerBound(array, value) {
    var low = 0;
    var high = array.length;
    while (low < high) {
      var middle = (low + high) >>> 1;
      if (array[middle] < value) { low = middle + 1; } else { high = middle; }
    }
    return low;
  }

  function setView(t0, t1) {
    var span = Math.max(SPAN_MIN_NS, t1 - t0);
    var spanMax = endNs * 1.2 + SPAN_MIN_NS;
    if (span > spanMax) { span = spanMax; }
    var middle = (t0 + t1) / 2;
    var start = middle - span / 2;
    var lowest = -endNs * 0.1;
    var highest = endNs * 1.1 - span;
    start = Math.min(Math.max(start, lowest), Math.max(lowest, highest));
    view.t0 = start;
    view.t1 = start + span;
    requestRender();
  }

  function zoomBy(factor, anchorFraction) {
    var anchor = view.t0 + (view.t1 - view.t0) * anchorFraction;
    setView(anchor - (anchor - view.t0) * factor, anchor + (view.t1 - anchor) * factor);
  }

  function panBy(fraction) {
    var shift = (view.t1 - view.t0) * fraction;
    setView(view.t0 + shift, view.t1 + shift);
  }

  function fitAll() {
    setView(-endNs * 0.01, endNs * 1.01);
  }

  function focusRange(from, to) {
    var span = Math.max(to - from, SPAN_MIN_NS * 10);
    setView(from - span * 0.25, to + span * 0.25);
  }

  function focusOp(id) {
    var op = ops[id];
    var end = op.ret === null ? op.call + Math.max(endNs / 200, SPAN_MIN_NS) : op.ret;
    if (hiddenLanes[op.lane]) {
      delete hiddenLanes[op.lane];
      syncNodeBoxes();
      layoutLanes();
    }
    selected = { type: 'op', id: id };
    showDetails();
    focusRange(op.call, end);
  }

  function syncNodeBoxes() {
    var inputs = document.querySelectorAll('#filter-nodes input');
    Array.prototype.forEach.call(inputs, function (input) {
      input.checked = !hiddenLanes[input.value];
    });
  }

  function focusFailure() {
    if (!failure) { return; }
    if (window_) {
      var from = Infinity;
      var to = -Infinity;
      window_.ops.forEach(function (id) {
        var op = ops[id];
        from = Math.min(from, op.call);
        to = Math.max(to, op.ret === null ? op.call : op.ret);
      });
      focusRange(from, to);
    } else if (failure.op !== null) {
      var op = ops[failure.op];
      focusRange(op.call, op.ret === null ? Math.max(op.call, failure.at_ns) : op.ret);
    } else {
      var half = Math.max(endNs / 40, 1e6);
      setView(failure.at_ns - half, failure.at_ns + half);
    }
    if (failure.op !== null) { selected = { type: 'op', id: failure.op }; showDetails(); }
  }

  /** Scrolls the page so that the failing step's lane is on screen, if it is not. */
  function scrollToFailingLane() {
    var box = failure.lane === null ? null : layout[failure.lane];
    if (!box) { return; }
    var chartTop = chart.getBoundingClientRect().top + window.scrollY;
    var laneBottom = chartTop + box.top + box.height;
    if (laneBottom > window.scrollY + window.innerHeight) {
      window.scrollTo(0, Math.max(0, chartTop + box.top - window.innerHeight / 2));
    }
  }

  // ----- drawing -----
  function requestRender() {
    if (renderPending) { return; }
    renderPending = true;
    window.requestAnimationFrame(function () {
      renderPending = false;
      render();
    });
  }

  function render() {
    var started = performance.now();
    var g = context;
    g.clearRect(0, 0, plotWidth, plotHeight);
    drawLanes(g);
    drawFaults(g);
    drawRoles(g);
    drawWindow(g);
    drawOps(g);
    var mode = drawMessages(g);
    drawMarkers(g);
    drawAxis(g);
    drawFailure(g);
    renderCount += 1;
    lastRenderMs = performance.now() - started;
    rangeText.textContent = formatTime(view.t0) + ' \u2013 ' + formatTime(view.t1) +
      '  (' + formatTime(view.t1 - view.t0) + ' in view)';
    root.setAttribute('data-render-mode', mode);
    root.setAttribute('data-render-count', String(renderCount));
    root.setAttribute('data-last-render-ms', lastRenderMs.toFixed(1));
  }

  function drawLanes(g) {
    laneIndexAtY.forEach(function (index, position) {
      var box = layout[index];
      g.fillStyle = position % 2 === 0 ? '#ffffff' : '#f7f9fb';
      g.fillRect(0, box.top, plotWidth, box.height);
      g.strokeStyle = '#e3e8ed';
      g.beginPath();
      g.moveTo(0, box.top + 0.5);
      g.lineTo(plotWidth, box.top + 0.5);
      g.stroke();
    });
    var xEnd = xOf(endNs);
    if (xEnd < plotWidth) {
      g.fillStyle = 'rgba(120, 130, 140, 0.08)';
      g.fillRect(Math.max(0, xEnd), AXIS_HEIGHT, plotWidth - Math.max(0, xEnd), plotHeight - AXIS_HEIGHT);
    }
  }

  function clippedSpan(start, end) {
    var x1 = Math.max(-2, xOf(start));
    var x2 = Math.min(plotWidth + 2, xOf(end));
    return x2 > x1 ? [x1, x2] : null;
  }

  /** Cluster-wide faults of this frame, labelled in the axis strip once it is drawn. */
  var globalFaults = [];

  function drawFaults(g) {
    globalFaults = [];
    data.faults.forEach(function (fault) {
      var span = clippedSpan(fault.start_ns, fault.end_ns);
      if (!span) { return; }
      var color = FAULT_COLORS[fault.kind] || 'rgba(120, 120, 120, 0.2)';
      var width = Math.max(1, span[1] - span[0]);
      g.fillStyle = color;
      if (fault.lanes.length === 0) {
        g.fillRect(span[0], AXIS_HEIGHT, width, plotHeight - AXIS_HEIGHT);
        globalFaults.push([span[0], width, fault.label]);
        return;
      }
      fault.lanes.forEach(function (lane) {
        var box = layout[lane];
        if (!box) { return; }
        g.fillStyle = color;
        g.fillRect(span[0], box.top + 1, width, box.height - 1);
        if (fault.kind === 'crash') { hatch(g, span[0], box.top + 1, width, box.height - 1); }
        label(g, fault.label, span[0] + 3, box.top + box.height - 4, width - 6,
          fault.kind === 'crash' ? '#ffffff' : '#7a3b00');
      });
    });
  }

  function hatch(g, x, y, width, height) {
    g.save();
    g.beginPath();
    g.rect(x, y, width, height);
    g.clip();
    g.strokeStyle = 'rgba(255, 255, 255, 0.25)';
    g.beginPath();
    var step = 8;
    var startX = x - height - ((x - height) % step);
    for (var lineX = startX; lineX < x + width && lineX - startX < 20000; lineX += step) {
      g.moveTo(lineX, y + height);
      g.lineTo(lineX + height, y);
    }
    g.stroke();
    g.restore();
  }

  function label(g, text, x, y, widthMax, color) {
    if (widthMax < 24) { return; }
    g.fillStyle = color;
    g.font = '11px system-ui, sans-serif';
    var shown = text;
    if (g.measureText(shown).width > widthMax) {
      var keep = Math.max(1, Math.floor(shown.length * widthMax / g.measureText(shown).width) - 1);
      shown = shown.slice(0, keep) + '\u2026';
    }
    g.fillText(shown, x, y);
  }

  function drawRoles(g) {
    rolesByLane.forEach(function (changes, index) {
      var box = layout[index];
      if (!box || changes.length === 0) { return; }
      for (var position = 0; position < changes.length; position += 1) {
        var change = changes[position];
        var until = position + 1 < changes.length ? changes[position + 1][0] : endNs;
        var span = clippedSpan(change[0], until);
        if (!span) { continue; }
        var role = data.role_names[change[1]];
        var color = ROLE_COLORS[role] || '#9e9e9e';
        var width = Math.max(1, span[1] - span[0]);
        g.fillStyle = color;
        g.fillRect(span[0], box.top + 3, width, 9);
        if (role === 'leader') {
          g.globalAlpha = 0.08;
          g.fillRect(span[0], box.top + 12, width, box.height - 13);
          g.globalAlpha = 1;
        }
        // `down` and `up` (a restart whose role nobody reported, as in chaos) have no term.
        var text = role === 'down' || role === 'up' ? role : role + ' \u00b7 term ' + change[2];
        label(g, text, span[0] + 3, box.top + 24, width - 6, '#37474f');
      }
    });
  }

  function lockVisible(op) {
    return lockShown < 0 || op.lock === lockShown;
  }

  function opBox(op) {
    var box = layout[op.lane];
    if (!box) { return null; }
    var x1 = xOf(op.call);
    var x2 = xOf(op.until);
    if (x2 < -2 || x1 > plotWidth + 2) { return null; }
    var top = box.top + 5 + Math.min(op.row, Math.max(0, lanes[op.lane].rows - 1)) * OP_ROW_HEIGHT;
    return { x: x1, y: top, width: Math.max(1.5, x2 - x1), height: OP_BAR_HEIGHT };
  }

  function drawOps(g) {
    var lastPixel = {};
    g.font = '10px system-ui, sans-serif';
    for (var id = 0; id < ops.length; id += 1) {
      var op = ops[id];
      if (!lockVisible(op)) { continue; }
      var rect = opBox(op);
      if (!rect) { continue; }
      var result = data.results[op.result];
      // Where bars are narrower than a pixel, draw one per pixel per row per colour.
      if (rect.width < 2) {
        var key = op.lane * 64 + op.row;
        var pixel = Math.round(rect.x) * 16 + op.result;
        if (lastPixel[key] === pixel) { continue; }
        lastPixel[key] = pixel;
      }
      g.fillStyle = RESULT_COLORS[result] || '#9e9e9e';
      if (op.ret === null) {
        // Unknown: it may take effect any time after its call. Drawn faint and dashed until
        // its client's next call, so that a row of them does not hide the answers.
        g.globalAlpha = 0.35;
        g.fillRect(rect.x, rect.y + 3, rect.width, rect.height - 6);
        g.globalAlpha = 1;
        g.setLineDash([3, 3]);
        g.strokeStyle = '#78909c';
        g.strokeRect(rect.x + 0.5, rect.y + 0.5, rect.width - 1, rect.height - 1);
        g.setLineDash([]);
      } else {
        g.fillRect(rect.x, rect.y, rect.width, rect.height);
      }
      if (rect.width > 60) {
        label(g, data.op_kinds[op.kind] + ' ' + data.locks[op.lock] + ' \u2192 ' + op.detail,
          Math.max(rect.x, 0) + 3, rect.y + 9, Math.min(rect.x + rect.width, plotWidth) - Math.max(rect.x, 0) - 6, '#102027');
        g.font = '10px system-ui, sans-serif';
      }
    }
    if (selected && selected.type === 'op') {
      outlineOp(g, selected.id, '#1f5fa8', 2.5);
    }
  }

  function outlineOp(g, id, color, width) {
    var rect = opBox(ops[id]);
    if (!rect) { return; }
    g.strokeStyle = color;
    g.lineWidth = width;
    g.strokeRect(rect.x - 1.5, rect.y - 1.5, rect.width + 3, rect.height + 3);
    g.lineWidth = 1;
  }

  function drawWindow(g) {
    if (!window_) { return; }
    var span = clippedSpan(window_.start_ns, window_.end_ns);
    if (!span) { return; }
    g.fillStyle = 'rgba(255, 214, 0, 0.16)';
    g.fillRect(span[0], AXIS_HEIGHT, span[1] - span[0], plotHeight - AXIS_HEIGHT);
  }

  function messageVisible(index) {
    var from = msgFrom[index];
    var to = msgTo[index];
    return !hiddenLanes[from] && !hiddenLanes[to] && !hiddenKinds[msgKind[index]] &&
      !hiddenFates[msgFate[index]];
  }

  function drawMessages(g) {
    drawnMessages = [];
    var first = lowerBound(msgSend, view.t0 - flightMaxNs);
    var last = lowerBound(msgSend, view.t1 + 1);
    var visible = 0;
    for (var index = first; index < last && visible <= MESSAGES_DETAIL_MAX; index += 1) {
      if (messageVisible(index) && (msgSend[index] >= view.t0 || msgArrive[index] >= view.t0)) {
        visible += 1;
      }
    }
    if (visible > MESSAGES_DETAIL_MAX) {
      drawMessageCounts(g, lowerBound(msgSend, view.t0), last);
      return 'aggregate';
    }
    for (var position = first; position < last; position += 1) {
      if (!messageVisible(position)) { continue; }
      if (msgSend[position] < view.t0 && !(msgArrive[position] >= view.t0)) { continue; }
      drawMessage(g, position);
    }
    statusText.textContent = visible + ' message' + (visible === 1 ? '' : 's') + ' in view';
    return 'detail';
  }

  function drawMessage(g, index) {
    var fate = data.fates[msgFate[index]];
    var style = FATE_STYLES[fate] || FATE_STYLES.delivered;
    var color = style.color || kindColor(msgKind[index]);
    var from = layout[msgFrom[index]];
    var to = layout[msgTo[index]];
    var x1 = xOf(msgSend[index]);
    var y1 = from.center;
    var x2;
    var y2;
    if (isNaN(msgArrive[index])) {
      // Never arrived: a short stub towards the target.
      x2 = x1 + 10;
      y2 = y1 + Math.sign(to.center - y1) * Math.min(Math.abs(to.center - y1), 16);
    } else {
      x2 = xOf(msgArrive[index]);
      y2 = to.center;
    }
    g.strokeStyle = color;
    g.fillStyle = color;
    g.setLineDash(style.dash);
    g.beginPath();
    g.moveTo(x1, y1);
    g.lineTo(x2, y2);
    g.stroke();
    g.setLineDash([]);
    if (style.mark === 'arrow' || style.mark === 'double') {
      arrowHead(g, x1, y1, x2, y2);
      if (style.mark === 'double') {
        g.beginPath();
        g.arc(x2, y2, 3.5, 0, Math.PI * 2);
        g.stroke();
      }
    } else if (style.mark === 'cross') {
      g.beginPath();
      g.moveTo(x2 - 3, y2 - 3); g.lineTo(x2 + 3, y2 + 3);
      g.moveTo(x2 + 3, y2 - 3); g.lineTo(x2 - 3, y2 + 3);
      g.stroke();
    } else if (style.mark === 'bar') {
      g.beginPath();
      g.moveTo(x2 - 4, y2); g.lineTo(x2 + 4, y2);
      g.stroke();
    }
    drawnMessages.push([x1, y1, x2, y2, index]);
  }

  function arrowHead(g, x1, y1, x2, y2) {
    var angle = Math.atan2(y2 - y1, x2 - x1);
    g.beginPath();
    g.moveTo(x2, y2);
    g.lineTo(x2 - 6 * Math.cos(angle - 0.4), y2 - 6 * Math.sin(angle - 0.4));
    g.lineTo(x2 - 6 * Math.cos(angle + 0.4), y2 - 6 * Math.sin(angle + 0.4));
    g.closePath();
    g.fill();
  }

  /** Coarse zoom: per lane, how many messages it sent in each bucket of pixels. */
  function drawMessageCounts(g, first, last) {
    var buckets = Math.ceil(plotWidth / BUCKET_WIDTH_PX) + 1;
    var sent = new Int32Array(lanes.length * buckets);
    var lost = new Int32Array(lanes.length * buckets);
    var total = 0;
    for (var index = first; index < last; index += 1) {
      if (!messageVisible(index)) { continue; }
      var bucket = Math.floor(xOf(msgSend[index]) / BUCKET_WIDTH_PX);
      if (bucket < 0 || bucket >= buckets) { continue; }
      var cell = msgFrom[index] * buckets + bucket;
      sent[cell] += 1;
      var fate = data.fates[msgFate[index]];
      if (fate !== 'delivered' && fate !== 'duplicated') { lost[cell] += 1; }
      total += 1;
    }
    laneIndexAtY.forEach(function (lane) {
      var box = layout[lane];
      var bottom = box.top + box.height - 1;
      var room = Math.min(box.height - 6, 14);
      for (var bucket = 0; bucket < buckets; bucket += 1) {
        var count = sent[lane * buckets + bucket];
        if (count === 0) { continue; }
        var height = Math.min(room, 1.5 + 2.2 * Math.log2(1 + count));
        g.fillStyle = 'rgba(63, 111, 181, 0.55)';
        g.fillRect(bucket * BUCKET_WIDTH_PX, bottom - height, BUCKET_WIDTH_PX - 0.5, height);
        var lostCount = lost[lane * buckets + bucket];
        if (lostCount > 0) {
          g.fillStyle = '#d32f2f';
          var lostHeight = Math.max(1.5, height * lostCount / count);
          g.fillRect(bucket * BUCKET_WIDTH_PX, bottom - lostHeight, BUCKET_WIDTH_PX - 0.5, lostHeight);
        }
      }
    });
    statusText.textContent = total.toLocaleString('en') + ' messages in view, counted per ' +
      BUCKET_WIDTH_PX + ' px (red: dropped, blocked or lost); zoom in for arrows';
  }

  /** Marker labels of this frame, written in the axis strip once it is drawn. */
  var markerLabels = [];

  function drawMarkers(g) {
    markerLabels = [];
    data.markers.forEach(function (marker) {
      var x = xOf(marker.at_ns);
      if (x < -1 || x > plotWidth + 1) { return; }
      g.strokeStyle = marker.kind === 'phase' ? '#546e7a' : '#8d6e63';
      g.setLineDash([5, 4]);
      g.beginPath();
      g.moveTo(x + 0.5, AXIS_HEIGHT);
      g.lineTo(x + 0.5, plotHeight);
      g.stroke();
      g.setLineDash([]);
      markerLabels.push([x, marker.label]);
    });
  }

  function niceStep(rough) {
    var power = Math.pow(10, Math.floor(Math.log10(rough)));
    var steps = [1, 2, 5, 10];
    for (var i = 0; i < steps.length; i += 1) {
      if (steps[i] * power >= rough) { return steps[i] * power; }
    }
    return 10 * power;
  }

  function drawAxis(g) {
    g.fillStyle = '#ffffff';
    g.fillRect(0, 0, plotWidth, AXIS_HEIGHT);
    var step = niceStep((view.t1 - view.t0) / plotWidth * 110);
    var first = Math.ceil(view.t0 / step) * step;
    g.strokeStyle = '#cfd8dc';
    g.fillStyle = '#37474f';
    g.font = '11px system-ui, sans-serif';
    for (var tick = first, count = 0; tick <= view.t1 && count < 200; tick += step, count += 1) {
      var x = Math.round(xOf(tick)) + 0.5;
      g.beginPath();
      g.moveTo(x, TICK_LABEL_Y + 3);
      g.lineTo(x, plotHeight);
      g.globalAlpha = 0.5;
      g.stroke();
      g.globalAlpha = 1;
      g.fillText(formatTime(tick), x + 3, TICK_LABEL_Y);
    }
    var labelEnd = -Infinity;
    markerLabels.sort(function (a, b) { return a[0] - b[0]; });
    markerLabels.forEach(function (marker) {
      if (marker[0] < labelEnd) { return; }
      g.strokeStyle = '#8d6e63';
      g.beginPath();
      g.moveTo(marker[0] + 0.5, MARKER_LABEL_Y - 10);
      g.lineTo(marker[0] + 0.5, AXIS_HEIGHT);
      g.stroke();
      label(g, marker[1], marker[0] + 3, MARKER_LABEL_Y, 180, '#4e342e');
      labelEnd = marker[0] + Math.min(184, g.measureText(marker[1]).width + 8);
    });
    globalFaults.forEach(function (fault) {
      g.fillStyle = 'rgba(229, 57, 53, 0.55)';
      g.fillRect(fault[0], GLOBAL_FAULT_TOP, fault[1], AXIS_HEIGHT - GLOBAL_FAULT_TOP - 2);
      label(g, fault[2], fault[0] + 3, AXIS_HEIGHT - 5, fault[1] - 6, '#ffffff');
    });
  }

  function drawFailure(g) {
    if (!failure) { return; }
    if (window_) {
      window_.ops.forEach(function (id) {
        if (id !== window_.culprit) { outlineOp(g, id, '#f57f17', 2); }
      });
      outlineOp(g, window_.culprit, '#c62828', 3);
      markCulprit(g, window_.culprit);
    }
    Object.keys(failureOps).forEach(function (id) { outlineOp(g, Number(id), '#c62828', 3); });
    var x = xOf(failure.at_ns);
    var inView = x >= 0 && x <= plotWidth;
    if (inView) {
      g.strokeStyle = 'rgba(198, 40, 40, 0.85)';
      g.lineWidth = 2;
      g.beginPath();
      g.moveTo(x, 0);
      g.lineTo(x, plotHeight);
      g.stroke();
      g.lineWidth = 1;
    }
    failingStep.style.left = x + 'px';
    failingStep.classList.toggle('highlighted', inView);
    failingStep.setAttribute('data-visible', inView ? 'true' : 'false');
  }

  function markCulprit(g, id) {
    var rect = opBox(ops[id]);
    if (!rect) { return; }
    g.fillStyle = '#c62828';
    g.font = 'bold 13px system-ui, sans-serif';
    g.fillText('\u2717', rect.x + rect.width + 4, rect.y + 10);
  }

  // ----- hit testing, tooltip and details -----
  function opAt(x, y) {
    var time = nsAt(x);
    var tolerance = (view.t1 - view.t0) / plotWidth * 3;
    for (var position = 0; position < laneIndexAtY.length; position += 1) {
      var lane = laneIndexAtY[position];
      var box = layout[lane];
      if (y < box.top || y >= box.top + box.height) { continue; }
      var ids = opsByLane[lane];
      for (var i = ids.length - 1; i >= 0; i -= 1) {
        var op = ops[ids[i]];
        if (op.call - tolerance > time) { continue; }
        if (op.until + tolerance < time || !lockVisible(op)) { continue; }
        var rect = opBox(op);
        if (rect && y >= rect.y - 2 && y <= rect.y + rect.height + 2) { return op.id; }
      }
      return null;
    }
    return null;
  }

  function messageAt(x, y) {
    var best = null;
    var bestDistance = 5;
    drawnMessages.forEach(function (segment) {
      var distance = distanceToSegment(x, y, segment);
      if (distance < bestDistance) {
        bestDistance = distance;
        best = segment[4];
      }
    });
    return best;
  }

  function distanceToSegment(x, y, segment) {
    var dx = segment[2] - segment[0];
    var dy = segment[3] - segment[1];
    var length = dx * dx + dy * dy;
    var t = length === 0 ? 0 : ((x - segment[0]) * dx + (y - segment[1]) * dy) / length;
    t = Math.max(0, Math.min(1, t));
    var px = segment[0] + t * dx - x;
    var py = segment[1] + t * dy - y;
    return Math.sqrt(px * px + py * py);
  }

  function itemAt(x, y) {
    var op = opAt(x, y);
    if (op !== null) { return { type: 'op', id: op }; }
    var message = messageAt(x, y);
    if (message !== null) { return { type: 'message', id: message }; }
    return null;
  }

  function describe(item) {
    if (item.type === 'op') {
      var op = ops[item.id];
      var lines = [
        opText(op),
        'called ' + formatTime(op.call) + ', ' +
          (op.ret === null ? 'never returned (result unknown)' : 'returned ' + formatTime(op.ret) +
          ' (' + formatTime(op.ret - op.call) + ')')
      ];
      if (window_ && windowOps[item.id]) {
        lines.push(item.id === window_.culprit ? 'the answer that cannot be placed' : 'in the failing window');
      }
      return lines.join('\n');
    }
    var index = item.id;
    var arrive = msgArrive[index];
    return lanes[msgFrom[index]].name + ' \u2192 ' + lanes[msgTo[index]].name + ' ' +
      data.message_kinds[msgKind[index]] + ' (' + data.fates[msgFate[index]] + ')\n' +
      'sent ' + formatTime(msgSend[index]) +
      (isNaN(arrive) ? '' : ', ' + (data.fates[msgFate[index]].indexOf('lost') === 0 ? 'lost ' : 'arrived ') +
        formatTime(arrive) + ' (' + formatTime(arrive - msgSend[index]) + ' later)');
  }

  function showDetails() {
    details.textContent = selected ? describe(selected) : 'Click an operation or a message for its details.';
  }

  // ----- input -----
  var drag = null;
  plot.addEventListener('pointerdown', function (event) {
    drag = { x: event.clientX, t0: view.t0, t1: view.t1, moved: false };
    plot.setPointerCapture(event.pointerId);
  });
  plot.addEventListener('pointermove', function (event) {
    var bounds = canvas.getBoundingClientRect();
    if (drag) {
      var dx = event.clientX - drag.x;
      if (Math.abs(dx) > 3) { drag.moved = true; plot.classList.add('dragging'); }
      if (drag.moved) {
        var shift = dx / plotWidth * (drag.t1 - drag.t0);
        setView(drag.t0 - shift, drag.t1 - shift);
      }
      tooltip.style.display = 'none';
      return;
    }
    var item = itemAt(event.clientX - bounds.left, event.clientY - bounds.top);
    if (item) {
      tooltip.textContent = describe(item);
      tooltip.style.left = (event.clientX + 14) + 'px';
      tooltip.style.top = (event.clientY + 12) + 'px';
      tooltip.style.display = 'block';
    } else {
      tooltip.style.display = 'none';
    }
  });
  plot.addEventListener('pointerup', function (event) {
    var bounds = canvas.getBoundingClientRect();
    if (drag && !drag.moved) {
      selected = itemAt(event.clientX - bounds.left, event.clientY - bounds.top);
      showDetails();
      requestRender();
    }
    drag = null;
    plot.classList.remove('dragging');
  });
  plot.addEventListener('pointerleave', function () { tooltip.style.display = 'none'; });
  plot.addEventListener('wheel', function (event) {
    event.preventDefault();
    var bounds = canvas.getBoundingClientRect();
    if (Math.abs(event.deltaX) > Math.abs(event.deltaY) || event.shiftKey) {
      panBy((event.deltaX || event.deltaY) / plotWidth);
      return;
    }
    var fraction = (event.clientX - bounds.left) / plotWidth;
    zoomBy(Math.exp(Math.max(-3, Math.min(3, event.deltaY * 0.0015))), fraction);
  }, { passive: false });
  document.addEventListener('keydown', function (event) {
    if (event.target && (event.target.tagName === 'INPUT' || event.target.tagName === 'SELECT')) { return; }
    var actions = {
      '+': function () { zoomBy(1 / ZOOM_STEP, 0.5); },
      '=': function () { zoomBy(1 / ZOOM_STEP, 0.5); },
      '-': function () { zoomBy(ZOOM_STEP, 0.5); },
      '0': fitAll,
      f: focusFailure,
      ArrowLeft: function () { panBy(-0.2); },
      ArrowRight: function () { panBy(0.2); }
    };
    if (actions[event.key]) {
      event.preventDefault();
      actions[event.key]();
    }
  });
  window.addEventListener('resize', function () {
    resizeCanvas();
    requestRender();
  });

  // ----- self-test: drives the page the way a person would, for the browser test -----
  function selfTest() {
    var renders = 0;
    var renderMsMax = 0;
    function step(action) {
      action();
      render();
      renders += 1;
      renderMsMax = Math.max(renderMsMax, lastRenderMs);
    }
    step(fitAll);
    for (var zoom = 0; zoom < 12; zoom += 1) { step(function () { zoomBy(1 / ZOOM_STEP, 0.5); }); }
    for (var pan = 0; pan < 6; pan += 1) { step(function () { panBy(0.3); }); }
    for (var out = 0; out < 12; out += 1) { step(function () { zoomBy(ZOOM_STEP, 0.3); }); }
    step(function () { hiddenLanes[0] = true; layoutLanes(); });
    step(function () { delete hiddenLanes[0]; layoutLanes(); });
    step(function () { hiddenKinds[0] = true; });
    step(function () { delete hiddenKinds[0]; lockShown = data.locks.length > 0 ? 0 : -1; });
    step(function () { lockShown = -1; focusFailure(); });
    root.setAttribute('data-selftest-renders', String(renders));
    root.setAttribute('data-selftest-max-render-ms', renderMsMax.toFixed(1));
    root.setAttribute('data-selftest', 'done');
  }

  // ----- start: lay out, draw once at once (not on a frame), show the failing step -----
  layoutLanes();
  var asked = /^#view=(-?[0-9.e+]+),(-?[0-9.e+]+)$/.exec(window.location.hash);
  if (asked) {
    setView(Number(asked[1]), Number(asked[2]));
  } else if (failure) {
    focusFailure();
  } else {
    fitAll();
  }
  render();
  if (failure) {
    scrollToFailingLane();
  }
  root.setAttribute('data-first-render-ms', performance.now().toFixed(1));
  if (window.location.hash === '#selftest') {
    selfTest();
  }
  root.setAttribute('data-timeline-ready', 'true');
})();
