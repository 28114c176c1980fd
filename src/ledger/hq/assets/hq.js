// cashless HQ: draws the overview's charts with Chart.js from the figures the page carries
// (the `data-chart` attribute of #charts, which the server wrote next to the same figures'
// tables), and again each time htmx swaps in a newer page. Money stays in integer cents;
// only the axis labels and tooltips are written as units and cents.
(function () {
  "use strict";

  var charts = [];

  function money(cents) {
    var sign = cents < 0 ? "-" : "";
    var abs = Math.abs(Math.round(cents));
    var units = Math.floor(abs / 100);
    var rest = abs % 100;
    return sign + units + "." + (rest < 10 ? "0" : "") + rest;
  }

  function moneyAxis() {
    return { beginAtZero: true, ticks: { precision: 0, callback: function (v) { return money(v); } } };
  }

  // `axis`: the value axis ("y" for upright bars, "x" for lying ones).
  function moneyTooltip(currency, axis) {
    return {
      callbacks: {
        label: function (item) {
          return item.dataset.label + ": " + money(item.parsed[axis]) + " " + currency;
        }
      }
    };
  }

  function draw() {
    if (typeof Chart === "undefined") {
      return;
    }
    var holder = document.getElementById("charts");
    if (!holder) {
      return;
    }
    var data;
    try {
      data = JSON.parse(holder.getAttribute("data-chart"));
    } catch (e) {
      return;
    }
    charts.forEach(function (c) { c.destroy(); });
    charts = [];
    var sales = "#1c7ed6";
    var topUps = "#37b24d";
    var common = { responsive: true, maintainAspectRatio: false, animation: false };

    // Sales and top-ups side by side; `axis` is the money axis ("y": upright bars).
    function bars(canvas, labels, salesCents, topUpsCents, axis) {
      var scales = {};
      scales[axis] = moneyAxis();
      return new Chart(document.getElementById(canvas), {
        type: "bar",
        data: {
          labels: labels,
          datasets: [
            { label: "Sales", data: salesCents, backgroundColor: sales },
            { label: "Top-ups", data: topUpsCents, backgroundColor: topUps }
          ]
        },
        options: Object.assign({}, common, {
          indexAxis: axis === "y" ? "x" : "y",
          scales: scales,
          plugins: { tooltip: moneyTooltip(data.currency, axis) }
        })
      });
    }
    charts.push(bars("chart-hours", data.hours, data.hour_sales_cents, data.hour_top_ups_cents, "y"));
    charts.push(bars("chart-points", data.points, data.point_sales_cents, data.point_top_ups_cents, "x"));

    charts.push(new Chart(document.getElementById("chart-modes"), {
      type: "doughnut",
      data: {
        labels: ["Online", "Offline"],
        datasets: [{ data: [data.online, data.offline], backgroundColor: [sales, "#f59f00"] }]
      },
      options: common
    }));
    holder.setAttribute("data-drawn", String(charts.length));
  }

  document.addEventListener("DOMContentLoaded", draw);
  document.addEventListener("htmx:afterSettle", draw);
})();
