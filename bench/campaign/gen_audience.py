#!/usr/bin/env python3
"""Writes a veto-format CSV of N people who agreed to the topic `news`.

Usage: gen_audience.py N > audience.csv

Each row is one person's grant (UK, with an IP, a name and a city for the
templates). Deterministic: the same N gives the same file.
"""
import sys

n = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
cities = ["Cardiff", "Leeds", "Bristol", "Glasgow", "Belfast", "Norwich"]
out = sys.stdout
out.write("email,action,topic,at,ip,jurisdiction,name,attr.city\n")
for i in range(n):
    at = f"2025-{1 + (i // 28) % 12:02d}-{1 + i % 28:02d}T10:{i % 60:02d}:00Z"
    ip = f"198.51.{i % 250}.{(i // 250) % 250 + 1}"
    out.write(f"p{i}@example.com,grant,news,{at},{ip},UK,Person {i},{cities[i % 6]}\n")
