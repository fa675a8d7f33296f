package app

import (
	"io"
	"time"

	"github.com/rs/zerolog"

	"github.com/clinicbridge/clinicbridge/config"
)

// NewLogger builds the agent's logger from log: level and format.
func NewLogger(c config.Log, w io.Writer) zerolog.Logger {
	if c.Format == "console" {
		w = zerolog.ConsoleWriter{Out: w, TimeFormat: time.RFC3339}
	}
	level, err := zerolog.ParseLevel(c.Level)
	if err != nil {
		level = zerolog.InfoLevel
	}
	return zerolog.New(w).Level(level).With().Timestamp().Logger()
}
