package main

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"time"

	"github.com/jackc/pgx/v5"
)

// pgDatabase is a database made for one run and dropped after it, so runs
// never see each other's events or jobs and nothing is left behind.
type pgDatabase struct {
	admin string // the operator's URL, used to create and drop
	name  string
	URL   string // the operator's URL with the database replaced
}

func createDatabase(ctx context.Context, adminURL string, n int) (*pgDatabase, error) {
	u, err := url.Parse(adminURL)
	if err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") {
		return nil, fmt.Errorf("--postgres-url must be a postgres:// URL")
	}
	name := fmt.Sprintf("cb_load_%d_%d", os.Getpid(), n)
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, adminURL)
	if err != nil {
		return nil, fmt.Errorf("postgres: %w", err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); err != nil {
		return nil, fmt.Errorf("postgres: create database %s: %w", name, err)
	}
	u.Path = "/" + name
	return &pgDatabase{admin: adminURL, name: name, URL: u.String()}, nil
}

// drop removes the database; FORCE ends connections an agent that was
// killed may have left open (PostgreSQL 13+).
func (d *pgDatabase) drop() error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, d.admin)
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	_, err = conn.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{d.name}.Sanitize()+" WITH (FORCE)")
	return err
}
