// Accessibility checks run inside the chat page by tests/test_page_browser.py (page.evaluate). They read the
// colours the browser computed for the rendered page, so they test the real theme, not the stylesheet's text.
(() => {
  function parse(colour) {
    const m = colour.match(/rgba?\(([^)]+)\)/);
    if (!m) throw new Error(`unexpected colour ${colour}`);
    const p = m[1].split(/[\s,/]+/).filter(Boolean).map(Number);
    return { r: p[0], g: p[1], b: p[2], a: p.length > 3 ? p[3] : 1 };
  }
  const over = (top, under) => ({
    r: top.r * top.a + under.r * (1 - top.a),
    g: top.g * top.a + under.g * (1 - top.a),
    b: top.b * top.a + under.b * (1 - top.a),
    a: 1,
  });
  function luminance(c) {
    const lin = (v) => {
      const s = v / 255;
      return s <= 0.04045 ? s / 12.92 : ((s + 0.055) / 1.055) ** 2.4;
    };
    return 0.2126 * lin(c.r) + 0.7152 * lin(c.g) + 0.0722 * lin(c.b);
  }
  function ratio(a, b) {
    const [hi, lo] = [luminance(a), luminance(b)].sort((x, y) => y - x);
    return (hi + 0.05) / (lo + 0.05);
  }
  const canvas = () => (matchMedia("(prefers-color-scheme: dark)").matches ? parse("rgb(18, 18, 18)")
    : parse("rgb(255, 255, 255)"));
  // The colour behind an element: its own background and its ancestors', composited (as painted; no images used).
  function background(element) {
    const layers = [];
    for (let e = element; e; e = e.parentElement) {
      const c = parse(getComputedStyle(e).backgroundColor);
      if (c.a > 0) layers.push(c);
      if (c.a >= 1) break;
    }
    let colour = canvas();
    for (const layer of layers.reverse()) colour = over(layer, colour);
    return colour;
  }
  function opacity(element) {
    let o = 1;
    for (let e = element; e; e = e.parentElement) o *= parseFloat(getComputedStyle(e).opacity);
    return o;
  }
  function needed(style) {
    const size = parseFloat(style.fontSize);
    const bold = parseInt(style.fontWeight, 10) >= 700;
    return size >= 24 || (bold && size >= 18.66) ? 3 : 4.5; // WCAG 1.4.3: large text needs 3:1
  }
  const failures = [];
  let checked = 0;
  function check(element, colour, what, need) {
    const bg = background(element);
    const fg = parse(colour);
    fg.a *= opacity(element);
    const r = ratio(over(fg, bg), bg);
    checked++;
    if (r < need) failures.push({ what, ratio: Math.round(r * 100) / 100, need, fg: colour, bg: `rgb(${bg.r}, ${bg.g}, ${bg.b})` });
  }
  // 1. Every visible piece of text.
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  for (let n = walker.nextNode(); n; n = walker.nextNode()) {
    const e = n.parentElement;
    if (!n.textContent.trim() || !e || !e.checkVisibility({ visibilityProperty: true })) continue;
    if (e.closest("select")) continue; // options are drawn by the select itself (checked below)
    const style = getComputedStyle(e);
    check(e, style.color, n.textContent.trim().slice(0, 40), needed(style));
  }
  // 2. Form fields: their text, their placeholder, and their edge against what surrounds them (WCAG 1.4.11, 3:1).
  for (const e of document.querySelectorAll("input, select, textarea, button, .button")) {
    if (!e.checkVisibility({ visibilityProperty: true }) || e.getBoundingClientRect().width < 2) continue;
    const style = getComputedStyle(e);
    if (e.matches("input, select, textarea")) check(e, style.color, `${e.id} text`, 4.5);
    if (e.placeholder && !e.value) check(e, getComputedStyle(e, "::placeholder").color, `${e.id} placeholder`, 4.5);
    const around = background(e.parentElement);
    const edge = parse(style.borderTopColor);
    const fill = background(e);
    const r = Math.max(ratio(over(edge, around), around), ratio(fill, around));
    checked++;
    if (r < 3) failures.push({ what: `${e.id || e.textContent.trim()} edge`, ratio: Math.round(r * 100) / 100, need: 3 });
  }
  // 3. Every form field has a label of its own (a <label for>, a wrapping label or aria-label/labelledby).
  const unlabelled = [];
  for (const e of document.querySelectorAll("input, select, textarea")) {
    const labelled = e.labels?.length || e.getAttribute("aria-label") || e.getAttribute("aria-labelledby");
    if (!labelled) unlabelled.push(e.id || e.outerHTML.slice(0, 60));
  }
  return { failures, checked, unlabelled };
})()
