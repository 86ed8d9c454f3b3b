var ship = createSprite(200, 300);
ship.setAnimation("rocket");
var rock = createSprite(100, 0);

function draw() {
  background("black");
  if (keyDown("right")) {
    ship.x = ship.x + 4;
  }
  drawSprites();
}
