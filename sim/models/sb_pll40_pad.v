// Behavioural simulation model of the iCE40 SB_PLL40_PAD (FEEDBACK_PATH "SIMPLE" only), for
// the board-top system test (yosys' cells_sim.v declares the PLL without a behaviour).
//
// It measures the reference period at PACKAGEPIN and makes PLLOUTGLOBAL / PLLOUTCORE at
//     f_out = f_ref * (DIVF + 1) / ((DIVR + 1) * 2**DIVQ)
// (iCE40 sysCLOCK PLL design guide, simple feedback), with LOCK high after LOCK_CYCLES
// reference cycles. Settings outside the datasheet's ranges (PFD 10-133 MHz, VCO 533-1066 MHz,
// output 16-275 MHz) stop the simulation: a wrong divider setting fails here, not on a board.
// Needs a simulator with timing (Verilator --timing, Icarus).
`timescale 1ns / 1ps
module SB_PLL40_PAD (
	input   PACKAGEPIN,
	output  PLLOUTCORE,
	output  PLLOUTGLOBAL,
	input   EXTFEEDBACK,
	input   [7:0] DYNAMICDELAY,
	output  LOCK,
	input   BYPASS,
	input   RESETB,
	input   LATCHINPUTVALUE,
	output  SDO,
	input   SDI,
	input   SCLK
);
	parameter FEEDBACK_PATH = "SIMPLE";
	parameter DELAY_ADJUSTMENT_MODE_FEEDBACK = "FIXED";
	parameter DELAY_ADJUSTMENT_MODE_RELATIVE = "FIXED";
	parameter SHIFTREG_DIV_MODE = 1'b0;
	parameter FDA_FEEDBACK = 4'b0000;
	parameter FDA_RELATIVE = 4'b0000;
	parameter PLLOUT_SELECT = "GENCLK";
	parameter DIVR = 4'b0000;
	parameter DIVF = 7'b0000000;
	parameter DIVQ = 3'b000;
	parameter FILTER_RANGE = 3'b000;
	parameter ENABLE_ICEGATE = 1'b0;
	parameter TEST_MODE = 1'b0;
	parameter EXTERNAL_DIVIDE_FACTOR = 1;
	parameter LOCK_CYCLES = 16;

	real t_last = 0.0;
	real t_ref = 0.0;
	real half = 0.0;
	real f_pfd, f_vco, f_out;
	integer n_ref = 0;
	reg clk_out = 1'b0;
	reg locked = 1'b0;

	initial begin
		if (FEEDBACK_PATH != "SIMPLE") begin
			$display("SB_PLL40_PAD model: FEEDBACK_PATH %s is not modelled", FEEDBACK_PATH);
			$finish;
		end
	end

	always @(posedge PACKAGEPIN) begin
		if (n_ref > 0) begin
			t_ref = $realtime - t_last;
			f_pfd = 1000.0 / t_ref / (DIVR + 1);                  // MHz (time unit: ns)
			f_vco = f_pfd * (DIVF + 1);
			f_out = f_vco / (1 << DIVQ);
			if (f_pfd < 10.0 || f_pfd > 133.0 || f_vco < 533.0 || f_vco > 1066.0 ||
			    f_out < 16.0 || f_out > 275.0) begin
				$display("SB_PLL40_PAD model: out of range: PFD %f MHz, VCO %f MHz, out %f MHz",
				         f_pfd, f_vco, f_out);
				$finish;
			end
			half = 500.0 / f_out;
		end
		t_last = $realtime;
		n_ref = n_ref + 1;
		locked <= RESETB && n_ref > LOCK_CYCLES;
	end

	always begin
		if (half == 0.0 || !RESETB)
			@(posedge PACKAGEPIN);
		else
			#(half) clk_out = ~clk_out;
	end

	assign PLLOUTGLOBAL = BYPASS ? PACKAGEPIN : clk_out;
	assign PLLOUTCORE = PLLOUTGLOBAL;
	assign LOCK = locked;
	assign SDO = 1'b0;
endmodule
