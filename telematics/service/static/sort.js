// Click a header of a table.sortable to sort its body by that column (again to reverse).
// A cell's data-sort attribute, when present, is the value sorted on; numbers sort as numbers.
"use strict";
(function () {
  function key(cell) {
    var raw = cell.hasAttribute("data-sort") ? cell.getAttribute("data-sort") : cell.textContent;
    var text = raw.trim();
    var number = Number(text.replace(/[,\s]/g, "").replace(/^\u2013$/, ""));
    return text !== "" && text !== "\u2013" && !isNaN(number) ? number : text.toLowerCase();
  }
  function compare(a, b) {
    if (typeof a === "number" && typeof b === "number") { return a - b; }
    if (typeof a === "number") { return -1; }
    if (typeof b === "number") { return 1; }
    return a < b ? -1 : a > b ? 1 : 0;
  }
  function sortBy(table, column, header) {
    var body = table.tBodies[0];
    var ascending = header.getAttribute("aria-sort") !== "ascending";
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (r1, r2) {
      var c = compare(key(r1.cells[column]), key(r2.cells[column]));
      return ascending ? c : -c;
    });
    Array.prototype.forEach.call(header.parentNode.cells, function (h) { h.removeAttribute("aria-sort"); });
    header.setAttribute("aria-sort", ascending ? "ascending" : "descending");
    rows.forEach(function (row) { body.appendChild(row); });
  }
  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("table.sortable").forEach(function (table) {
      if (!table.tHead || !table.tBodies.length) { return; }
      Array.prototype.forEach.call(table.tHead.rows[0].cells, function (header, column) {
        header.addEventListener("click", function () { sortBy(table, column, header); });
      });
    });
  });
})();
